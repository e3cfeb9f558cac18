"""Retraining end to end: "Start Training" in Label Studio serves a better version."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import requests

from tests.conftest import CLASSES, images_of

from .labelstudio import REPO_ROOT, ManagedProcess, choices_label_config, log_tail
from .redis_server import RedisServer

pytestmark = [pytest.mark.e2e]

MODEL_NAME = "retrain_e2e_model"
NEW_CLASS = "Pluto"
KNOWN_CLASSES = [label for label in CLASSES if label != NEW_CLASS]
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

TRAINING_TIMEOUT = 300.0
"""How long to wait for a new version before the test fails (not a speed goal)."""
POLL_SECONDS = 3.0
REFRESH_SECONDS = 2.0
"""``MODEL_REFRESH_SECONDS`` of the backends started here (the default)."""

# The weak model sees images 0-49 of the known classes; labels come from 50-69
# and the evaluation from 100-129, so no evaluated image was ever trained on.
_UPLOADED_NAME = re.compile(r"-(?P<label>[A-Za-z]+)_\d+\.jpg$")
_CHILD_PID = re.compile(r"Training job (\S+) started in process (\d+)")
_RUN_FINISHED = re.compile(r"Training finished for project \d+ in (\d+) s")
_RUN_FAILED = re.compile(
    r"Candidate \S+ rejected|ended without a model|Training run \S+ failed"
)


@dataclasses.dataclass
class Scores:
    """Predictions of one model version compared with the known classes."""

    accuracy: float
    recall: dict[str, float]
    count: int


@pytest.fixture(scope="module")
def weak_model_folder(
    bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A guide-style weak model that knows the nine classes other than Pluto.

    Trained on images 0-49 of each class into the session's store; returns
    its folder ``<BENTOML_HOME>/models/<name>``. Its data folder holds only
    those nine classes, so the network has no output for Pluto at all.
    """
    from tests.guide_model import save_guide_style_model

    data_dir = tmp_path_factory.mktemp("nine-classes")
    files = []
    for label in KNOWN_CLASSES:
        (data_dir / label).mkdir()
        for path in images_of(label, 0, 50):
            files.append(Path(shutil.copy2(path, data_dir / label / path.name)))
    model = save_guide_style_model(data_dir, name=MODEL_NAME, files=files)
    outputs = model.custom_objects["postprocess"]([[0.0] * len(KNOWN_CLASSES)])
    assert sorted(outputs["probabilities"]) == KNOWN_CLASSES
    return bentoml_home / "models" / MODEL_NAME


@pytest.fixture
def store_home(tmp_path: Path, weak_model_folder: Path) -> Path:
    """A BentoML home of this test's own, holding a copy of the weak model."""
    home = tmp_path / "store"
    shutil.copytree(weak_model_folder, home / "models" / MODEL_NAME)
    return home


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port of 127.0.0.1, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def training_worker(tmp_path: Path) -> Iterator[Callable[..., ManagedProcess]]:
    """Factory starting ``python -m backend worker`` with an environment given.

    It returns once the worker logs that it listens; the worker is stopped
    after the test.
    """
    started: list[ManagedProcess] = []

    def start(env: Mapping[str, str]) -> ManagedProcess:
        worker = ManagedProcess(
            [str(PYTHON), "-m", "backend", "worker"],
            cwd=REPO_ROOT,
            env=env,
            log_path=tmp_path / "training-worker.log",
            name="training worker",
        )
        started.append(worker)
        worker.spawn()
        worker.wait_until(
            lambda: "Training worker listening" in _read(worker.log_path),
            timeout=60,
            what="listening on the queue",
        )
        return worker

    yield start
    for worker in reversed(started):
        worker.stop()


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _backend_env(label_studio, home: Path, tmp_path: Path, **extra: str) -> dict:
    env = {
        "BENTOML_HOME": str(home),
        "MODEL_TAG": f"{MODEL_NAME}:latest",
        "MODEL_DIR": str(tmp_path / "model-dir"),
        "LOG_LEVEL": "INFO",
        "MODEL_REFRESH_SECONDS": str(REFRESH_SECONDS),
        # Annotating must not start runs by itself: only "Start Training" does.
        "TRAIN_EVERY": "1000",
        "TRAINING_QUEUE": "local",
    }
    if label_studio is not None:
        env["LABEL_STUDIO_URL"] = label_studio.url
        env["LABEL_STUDIO_API_KEY"] = label_studio.legacy_token
    env.update(extra)
    return env


def _true_classes(client, project_id: int) -> dict[int, str]:
    """The class of every task, read from the uploaded file's name."""
    truth = {}
    for task in client.list_tasks(project_id):
        match = _UPLOADED_NAME.search(task["data"]["image"])
        assert match, f"unexpected image URL {task['data']['image']!r}"
        truth[task["id"]] = match.group("label")
    return truth


def _annotate(client, task_ids: Sequence[int], truth: dict[int, str]) -> None:
    for task_id in task_ids:
        client.create_annotation(
            task_id, from_name="choice", to_name="image", choice=truth[task_id]
        )


def _predict(
    client, project_id: int, task_ids: Sequence[int], tag: str
) -> dict[int, str]:
    """Run "Retrieve predictions" on tasks; return the labels ``tag`` predicted."""
    client.retrieve_predictions(project_id, task_ids)
    wanted = set(task_ids)
    predicted = {}
    for prediction in client.list_project_predictions(project_id):
        if prediction["task"] in wanted and prediction["model_version"] == tag:
            (region,) = prediction["result"]
            predicted[prediction["task"]] = region["value"]["choices"][0]
    missing = wanted - predicted.keys()
    assert not missing, f"{len(missing)} of {len(wanted)} tasks got no {tag} label"
    return predicted


def _scores(predicted: dict[int, str], truth: dict[int, str]) -> Scores:
    """Accuracy and per-class recall of predicted labels."""
    totals = Counter(truth[task] for task in predicted)
    hits = Counter(truth[task] for task in predicted if predicted[task] == truth[task])
    return Scores(
        accuracy=sum(hits.values()) / len(predicted),
        recall={label: hits[label] / totals[label] for label in totals},
        count=len(predicted),
    )


@dataclasses.dataclass
class TrainingRun:
    """What one press of "Start Training" led to, as Label Studio saw it."""

    old_tag: str
    new_tag: str
    seconds: float
    slowest_health: float
    webhook_seconds: float
    logged_seconds: str
    """What the training log says the run itself took ("?" when it says nothing)."""


def _train_until_new_version(
    client, ml_backend_id: int, backend, old_tag: str, log_path: Path | None = None
) -> TrainingRun:
    """Press "Start Training" and wait until Label Studio reports a new version.

    Polls the ML backend through Label Studio every few seconds, timing the
    backend's ``/health`` meanwhile. Fails early, with the log, when the run
    ends without a promoted version.

    :param log_path: the log that tells how training went (the backend's by
        default; a queue worker's in queue mode).
    """
    log_path = log_path or backend.log_path
    already = len(_read(log_path))
    pressed = time.monotonic()
    client.start_training(ml_backend_id)
    webhook_seconds = time.monotonic() - pressed
    slowest_health = 0.0
    while True:
        asked = time.monotonic()
        health = requests.get(f"{backend.url}/health", timeout=10)
        slowest_health = max(slowest_health, time.monotonic() - asked)
        assert health.status_code == 200, health.text
        tag = client.get_ml_backend(ml_backend_id)["model_version"]
        news = _read(log_path)[already:]
        if tag and tag != old_tag:
            finished = _RUN_FINISHED.findall(news)
            return TrainingRun(
                old_tag,
                tag,
                time.monotonic() - pressed,
                slowest_health,
                webhook_seconds,
                finished[-1] if finished else "?",
            )
        if _RUN_FAILED.search(news):
            pytest.fail(f"The training run gave no new version:\n{news[-6000:]}")
        if time.monotonic() - pressed > TRAINING_TIMEOUT:
            pytest.fail(
                f"Label Studio still reports {old_tag} {TRAINING_TIMEOUT:.0f} s after"
                f" Start Training.\n--- {log_path.name} ---\n{log_tail(log_path)}"
            )
        time.sleep(POLL_SECONDS)


def _versions(backend) -> dict:
    answer = requests.get(f"{backend.url}/versions", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _stage_of(backend, tag: str) -> str:
    details = {entry["tag"]: entry for entry in _versions(backend)["details"]}
    assert tag in details, f"{tag} is not among {sorted(details)}"
    return details[tag]["stage"]


def _report(title: str, run: TrainingRun, before: Scores, after: Scores) -> None:
    print(
        f"\n[retraining] {title}: {run.old_tag} -> {run.new_tag} in"
        f" {run.seconds:.1f} s from Start Training (the run logs"
        f" {run.logged_seconds} s; webhook through Label Studio"
        f" {run.webhook_seconds:.2f} s, slowest /health {run.slowest_health:.3f} s);"
        f" accuracy {before.accuracy:.3f} -> {after.accuracy:.3f}"
        f" on {after.count} unlabeled tasks; recall {after.recall}"
    )


def _connect(client, project_id: int, backend) -> tuple[int, str]:
    ml = client.connect_ml_backend(project_id, backend.url, title="BentoML")
    ml = client.get_ml_backend(ml["id"])
    assert ml["state"] == "CO", ml
    assert ml["model_version"].startswith(f"{MODEL_NAME}:"), ml
    return ml["id"], ml["model_version"]


def _labeled_project(client, make_project, backend, *, labels: int, unseen: int):
    """A project of the nine known classes, ``labels`` annotated tasks per class
    and ``unseen`` unlabeled ones, connected to ``backend`` and scored once.

    :returns: project id, labeled and evaluation task ids, true classes, ML
        backend id, the weak model's tag and its scores on the evaluation tasks.
    """
    project_id = make_project(label_config=choices_label_config(KNOWN_CLASSES))["id"]
    labeled = client.import_files(
        project_id,
        [p for label in KNOWN_CLASSES for p in images_of(label, 50, 50 + labels)],
    )
    evaluation = client.import_files(
        project_id,
        [p for label in KNOWN_CLASSES for p in images_of(label, 100, 100 + unseen)],
    )
    truth = _true_classes(client, project_id)
    _annotate(client, labeled, truth)
    ml_backend_id, weak_tag = _connect(client, project_id, backend)
    before = _scores(_predict(client, project_id, evaluation, weak_tag), truth)
    return project_id, labeled, evaluation, truth, ml_backend_id, weak_tag, before


def test_start_training_promotes_a_better_version_and_learns_a_new_class(
    label_studio, backend_server, make_project, store_home, tmp_path
):
    client = label_studio.client()
    backend = backend_server(
        "gunicorn", env=_backend_env(label_studio, store_home, tmp_path)
    )
    project = _labeled_project(client, make_project, backend, labels=20, unseen=30)
    project_id, labeled, evaluation, truth, ml_backend_id, weak_tag, before = project

    first = _train_until_new_version(client, ml_backend_id, backend, weak_tag)
    after = _scores(_predict(client, project_id, evaluation, first.new_tag), truth)
    _report("run 1 (9 classes, 180 labels)", first, before, after)

    assert after.accuracy >= 0.95
    assert after.accuracy > before.accuracy
    assert _stage_of(backend, first.new_tag) == "promoted"

    client.update_label_config(project_id, choices_label_config(CLASSES))
    new_labeled = client.import_files(project_id, images_of(NEW_CLASS, 0, 50))
    new_evaluation = client.import_files(project_id, images_of(NEW_CLASS, 100, 130))
    truth = _true_classes(client, project_id)
    _annotate(client, new_labeled, truth)
    everything = list(evaluation) + list(new_evaluation)
    before_new = _scores(_predict(client, project_id, everything, first.new_tag), truth)

    second = _train_until_new_version(client, ml_backend_id, backend, first.new_tag)
    predicted = _predict(client, project_id, everything, second.new_tag)
    after_new = _scores(predicted, truth)
    others = _scores({t: predicted[t] for t in evaluation}, truth)
    _report("run 2 (Pluto added, 50 labels)", second, before_new, after_new)

    assert after_new.recall[NEW_CLASS] >= 0.90
    assert others.accuracy >= 0.95
    assert _stage_of(backend, second.new_tag) == "promoted"


@pytest.mark.queue
def test_in_queue_mode_an_rq_worker_trains_and_every_web_process_serves_it(
    label_studio,
    backend_server,
    make_project,
    store_home,
    tmp_path,
    redis_server,
    training_worker,
):
    client = label_studio.client()
    env = _backend_env(
        label_studio,
        store_home,
        tmp_path,
        TRAINING_QUEUE="redis",
        REDIS_URL=redis_server.url,
    )
    backend = backend_server("gunicorn", env=env)
    worker = training_worker(backend.environment())
    project = _labeled_project(client, make_project, backend, labels=10, unseen=10)
    project_id, labeled, evaluation, truth, ml_backend_id, weak_tag, before = project

    run = _train_until_new_version(
        client, ml_backend_id, backend, weak_tag, log_path=worker.log_path
    )
    after = _scores(_predict(client, project_id, evaluation, run.new_tag), truth)
    _report("queue mode (9 classes, 90 labels)", run, before, after)

    assert after.accuracy > before.accuracy
    assert "Training started for project" not in backend.log()
    assert f"Training started for project {project_id}" in _read(worker.log_path)
    time.sleep(2 * REFRESH_SECONDS)
    served = [
        requests.get(f"{backend.url}/health", timeout=5).json()["model_version"]
        for _ in range(12)
    ]
    assert served == [run.new_tag] * len(served), (
        f"/health answers after the promotion of {run.new_tag}: {Counter(served)}"
    )


def _process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _cli_models(home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        {
            "BENTOML_HOME": str(home),
            "MODEL_TAG": f"{MODEL_NAME}:latest",
            "BENTOML_DO_NOT_TRACK": "True",
        }
    )
    return subprocess.run(
        [str(PYTHON), "-m", "backend", "models"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _listed_tags(output: str) -> list[str]:
    return [
        line.split()[0]
        for line in output.splitlines()
        if line.startswith(f"{MODEL_NAME}:")
    ]


def _wait_for_log(backend, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while text not in backend.log():
        if time.monotonic() > deadline:
            pytest.fail(
                f"No {text!r} in the backend log:\n{log_tail(backend.log_path)}"
            )
        time.sleep(0.1)
    return backend.log()


def test_a_training_process_killed_with_sigkill_leaves_the_old_version_serving(
    label_studio, backend_server, make_project, store_home, tmp_path
):
    client = label_studio.client()
    backend = backend_server(
        "gunicorn", env=_backend_env(label_studio, store_home, tmp_path)
    )
    project_id = make_project(label_config=choices_label_config(KNOWN_CLASSES))["id"]
    labeled = client.import_files(
        project_id, [p for label in KNOWN_CLASSES for p in images_of(label, 50, 60)]
    )
    truth = _true_classes(client, project_id)
    _annotate(client, labeled, truth)
    ml_backend_id, weak_tag = _connect(client, project_id, backend)
    listed_before = _cli_models(store_home)
    assert listed_before.returncode == 0, listed_before.stderr
    tags_before = _listed_tags(listed_before.stdout)
    assert tags_before == [weak_tag]

    client.start_training(ml_backend_id)
    log = _wait_for_log(backend, f"Training started for project {project_id}", 120)
    started = _CHILD_PID.findall(log)
    assert started, f"no training process in the backend log:\n{log[-3000:]}"
    job_id, pid = started[0][0], int(started[0][1])
    assert _process_alive(pid), f"training process {pid} ended before the kill"
    assert "train-project" in _command_line(pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _process_alive(pid)

    time.sleep(2 * REFRESH_SECONDS)
    health = requests.get(f"{backend.url}/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["model_version"] == weak_tag
    assert client.get_ml_backend(ml_backend_id)["model_version"] == weak_tag
    listed_after = _cli_models(store_home)
    assert listed_after.returncode == 0, listed_after.stderr
    assert _listed_tags(listed_after.stdout) == tags_before
    served_lines = [
        line for line in listed_after.stdout.splitlines() if "served" in line
    ]
    assert [line.split()[0] for line in served_lines] == [weak_tag]
    folders = [p for p in (store_home / "models" / MODEL_NAME).iterdir() if p.is_dir()]
    assert [p.name for p in folders if not (p / "model.yaml").is_file()] == []

    run = _train_until_new_version(client, ml_backend_id, backend, weak_tag)
    print(
        f"\n[retraining] after kill -9 of job {job_id}: {run.old_tag} ->"
        f" {run.new_tag} in {run.seconds:.1f} s from Start Training"
    )
    assert _stage_of(backend, run.new_tag) == "promoted"


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid``, with its command line."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                found.append((child, _command_line(child)))
                frontier.append(child)
    return found


def test_webhooks_that_do_not_train_answer_at_once_and_start_no_process(
    backend_server, store_home, tmp_path
):
    backend = backend_server("gunicorn", env=_backend_env(None, store_home, tmp_path))
    processes_before = _descendants(backend.pid)
    versions_before = _versions(backend)["versions"]

    answer = requests.post(
        f"{backend.url}/webhook", json={"action": "START_TRAINING"}, timeout=5
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == "project"
    assert "project" in answer.json()["message"]

    events = [
        ("TASKS_CREATED", {"project": {"id": 7}, "tasks": [{"id": 1}]}),
        ("TASKS_DELETED", {"project": {"id": 7}, "tasks": [{"id": 1}]}),
        ("PROJECT_UPDATED", {"project": {"id": 7, "title": "Planets"}}),
        ("ANNOTATION_CREATED", {"project": {"id": 7}, "annotation": {"project": 7}}),
    ]
    for action, payload in events:
        answer = requests.post(
            f"{backend.url}/webhook", json={"action": action, **payload}, timeout=5
        )
        assert answer.status_code < 300, (action, answer.text)
        expected = "counted" if action.startswith("ANNOTATION") else "ignored"
        assert answer.json()["status"] == expected, (action, answer.json())

    time.sleep(3)
    assert _descendants(backend.pid) == processes_before
    assert "Training job" not in backend.log()
    assert _versions(backend)["versions"] == versions_before
