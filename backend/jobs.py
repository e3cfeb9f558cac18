"""When training runs and where: the webhook policy, run locks, local and RQ jobs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from label_studio_ml.model import JobManager

from backend.annotations import project_id_of
from backend.errors import ClientError
from backend.settings import Settings

logger = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED")
START_TRAINING = "START_TRAINING"
_LOCK_SECONDS = 120


class FileState:
    """Per-project training state in files, shared by the processes of one host.

    The run lock is an ``flock`` held by the training process, so the kernel
    frees it when that process dies, even by ``kill -9``.

    :param folder: where the state files live (under ``MODEL_DIR``).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, project: int, suffix: str) -> Path:
        return self.folder / f"project-{int(project)}.{suffix}"

    @contextlib.contextmanager
    def _record(self, project: int):
        with open(self._path(project, "state.lock"), "a+") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            path = self._path(project, "json")
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = {}
            yield record
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(record))
            os.replace(temporary, path)

    def count_change(self, project: int) -> int:
        with self._record(project) as record:
            record["changes"] = record.get("changes", 0) + 1
            return record["changes"]

    def set_pending(self, project: int) -> None:
        with self._record(project) as record:
            record["pending"] = True

    def take_pending(self, project: int) -> bool:
        with self._record(project) as record:
            pending = bool(record.get("pending"))
            record["pending"] = False
            if pending:
                record["changes"] = 0
            return pending

    def has_pending(self, project: int) -> bool:
        with self._record(project) as record:
            return bool(record.get("pending"))

    def record_result(self, project: int, result: dict) -> None:
        with self._record(project) as record:
            record["last"] = result

    def last_result(self, project: int) -> dict | None:
        with self._record(project) as record:
            return record.get("last")

    @contextlib.contextmanager
    def run_lock(self, project: int):
        """Yield True while holding the project's run lock, False if taken."""
        with open(self._path(project, "run.lock"), "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_running(self, project: int) -> bool:
        with self.run_lock(project) as acquired:
            return not acquired


class RedisState:
    """Per-project training state in Redis, shared by every host of a queue.

    The run lock expires unless its holder renews it, so a worker killed with
    ``kill -9`` blocks the project for at most two minutes.

    :param redis: a Redis connection.
    :param prefix: key prefix (the queue name).
    """

    def __init__(self, redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, project: int, name: str) -> str:
        return f"{self.prefix}:project:{int(project)}:{name}"

    def count_change(self, project: int) -> int:
        return int(self.redis.incr(self._key(project, "changes")))

    def set_pending(self, project: int) -> None:
        self.redis.set(self._key(project, "pending"), "1")

    def take_pending(self, project: int) -> bool:
        pending = self.redis.getdel(self._key(project, "pending")) is not None
        if pending:
            self.redis.delete(self._key(project, "changes"))
        return pending

    def has_pending(self, project: int) -> bool:
        return bool(self.redis.exists(self._key(project, "pending")))

    def record_result(self, project: int, result: dict) -> None:
        self.redis.set(self._key(project, "last"), json.dumps(result))

    def last_result(self, project: int) -> dict | None:
        raw = self.redis.get(self._key(project, "last"))
        return json.loads(raw) if raw else None

    @contextlib.contextmanager
    def run_lock(self, project: int):
        key = self._key(project, "lock")
        token = uuid.uuid4().hex
        if not self.redis.set(key, token, nx=True, ex=_LOCK_SECONDS):
            yield False
            return
        stop = threading.Event()

        def renew():
            while not stop.wait(_LOCK_SECONDS / 4):
                if self.redis.get(key) == token.encode():
                    self.redis.expire(key, _LOCK_SECONDS)

        thread = threading.Thread(target=renew, name="training-lock", daemon=True)
        thread.start()
        try:
            yield True
        finally:
            stop.set()
            if self.redis.get(key) == token.encode():
                self.redis.delete(key)

    def is_running(self, project: int) -> bool:
        return bool(self.redis.exists(self._key(project, "lock")))


def make_state(settings: Settings):
    """The training state store the settings ask for."""
    if settings.uses_queue:
        from redis import Redis

        return RedisState(Redis.from_url(settings.redis_url), settings.rq_queue_name)
    return FileState(settings.model_dir / "training")


class TrainingJobManager(JobManager):
    """Decides which webhooks train, and runs training off the request path.

    This is the SDK's job-manager extension point. Unlike the SDK's default it
    starts nothing for events that do not train: ``START_TRAINING`` always
    asks for a run; annotation events ask for one once ``TRAIN_EVERY`` changes
    have piled up. One run at a time per project; requests during a run
    coalesce into one follow-up run. Runs happen in a child process that loads
    TensorFlow itself (``TRAINING_QUEUE=local``), or in an ``rq`` worker
    (``TRAINING_QUEUE=redis``), never in a web process.

    :param service: the process's :class:`backend.service.Service`.
    """

    def __init__(self, service) -> None:
        self.service = service
        self.settings: Settings = service.settings
        self.state = make_state(self.settings)
        self._children: list[subprocess.Popen] = []

    def submit(self, event: str, data: dict) -> dict:
        """Handle one webhook event; answers at once with what was decided.

        :raises ClientError: when a training event's payload names no project.
        """
        if event not in ANNOTATION_EVENTS and event != START_TRAINING:
            logger.debug("Ignoring webhook event %s", event)
            return {"status": "ignored", "event": event}
        project = project_id_of(data)
        if project is None:
            raise ClientError(
                f"The {event} payload names no project: expected project.id,"
                " annotation.project or task.project.",
                field="project",
            )
        if event != START_TRAINING:
            changes = self.state.count_change(project)
            if changes < self.settings.train_every:
                return {
                    "status": "counted",
                    "project": project,
                    "changes": changes,
                    "train_every": self.settings.train_every,
                }
        self.state.set_pending(project)
        if self.state.is_running(project):
            logger.info(
                "Training of project %d is running; one more run queued", project
            )
            return {"status": "coalesced", "project": project}
        job_id = f"{project}-{int(time.time() * 1000)}"
        self.run_job(None, (event, {"project": {"id": project}}, job_id))
        return {"status": "started", "project": project, "job_id": job_id}

    def run_job(self, model_class, args: tuple) -> None:
        event, data, job_id = args
        payload = {"event": event, "data": data, "job_id": job_id}
        connection = self.service.connections.get()
        if not self.settings.label_studio_url or not self.settings.label_studio_api_key:
            payload["label_studio"] = {"url": connection.url, "token": connection.token}
        if self.settings.uses_queue:
            from redis import Redis
            from rq import Queue

            queue = Queue(
                self.settings.rq_queue_name,
                connection=Redis.from_url(self.settings.redis_url),
            )
            queue.enqueue(
                "backend.jobs.run_queued_job",
                payload,
                job_timeout=3600,
                job_id=job_id,
                result_ttl=86400,
                failure_ttl=86400,
            )
            logger.info(
                "Training job %s queued on %s", job_id, self.settings.rq_queue_name
            )
            return
        self._children = [child for child in self._children if child.poll() is None]
        child = subprocess.Popen(
            [sys.executable, "-m", "backend", "train-project"],
            stdin=subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        child.stdin.write(json.dumps(payload).encode())
        child.stdin.close()
        self._children.append(child)
        threading.Thread(target=child.wait, daemon=True).start()
        logger.info("Training job %s started in process %d", job_id, child.pid)

    def status(self, project) -> dict:
        """Whether a project is training, and how its last run ended."""
        project_id = project_id_of({"project": project}) if project else None
        if project_id is None:
            return {"is_training": False}
        return {
            "is_training": self.state.is_running(project_id),
            "last_run": self.state.last_result(project_id),
            "model_version": self.service.served.current_tag(),
        }

    # The SDK's generic job() runs one event through a model instance; these are
    # the hooks it calls around that.

    @contextlib.contextmanager
    def start_run(self, event, data, job_id):
        yield None

    def get_result(self, model_version=None):
        return {}

    def post_process(self, event, data, job_id, result):
        project = project_id_of(data)
        if project is not None and isinstance(result, dict):
            self.state.record_result(project, result)


def execute(settings: Settings, payload: dict) -> list[dict]:
    """Run the training a job asks for, in this (training) process.

    Takes the project's run lock, then runs while runs are pending; another
    holder of the lock means the run is already happening and this job ends.
    """
    from backend import service as service_module
    from backend.service import Service
    from model import BentoImageClassifier

    service = service_module.install(Service(settings))
    label_studio = payload.get("label_studio") or {}
    if label_studio:
        service.connections.learn(
            label_studio.get("url", ""), label_studio.get("token", "")
        )
    manager = TrainingJobManager(service)
    event, data, job_id = payload["event"], payload["data"], payload["job_id"]
    project = project_id_of(data)
    results = []
    while True:
        with manager.state.run_lock(project) as acquired:
            if not acquired:
                logger.info(
                    "Project %d is already training; job %s ends", project, job_id
                )
                return results
            while manager.state.take_pending(project):
                results.append(
                    _one_run(manager, BentoImageClassifier, event, data, job_id)
                )
        if not manager.state.has_pending(project):
            return results


def _one_run(manager, model_class, event, data, job_id) -> dict:
    started = time.monotonic()
    try:
        result = manager.job(model_class, event, data, job_id)
    except Exception as exc:
        from backend.training import TrainingError

        if isinstance(exc, TrainingError):
            logger.warning("Training run %s ended without a model: %s", job_id, exc)
        else:
            logger.exception("Training run %s failed", job_id)
        result = {"status": "failed", "reason": str(exc)}
        manager.post_process(event, data, job_id, result)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def run_local_job(settings: Settings, payload: dict) -> dict:
    """Entry point of ``python -m backend train-project``, a local training job."""
    results = execute(settings, payload)
    return {"job_id": payload.get("job_id"), "runs": results}


def run_queued_job(payload: dict) -> dict:
    """Entry point of a queued training job, run by an ``rq`` worker."""
    from backend.logs import configure_logging
    from backend.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    return run_local_job(settings, payload)


def run_worker(settings: Settings) -> None:
    """Run an RQ worker that trains jobs from the configured queue."""
    from redis import Redis
    from rq import Queue, Worker

    redis = Redis.from_url(settings.redis_url)
    queue = Queue(settings.rq_queue_name, connection=redis)
    logger.info(
        "Training worker listening on queue %s at %s",
        queue.name,
        settings.redis_url.rsplit("@", 1)[-1],
    )
    Worker([queue], connection=redis).work()
