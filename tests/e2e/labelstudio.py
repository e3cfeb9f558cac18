"""Run a real Label Studio and an ML backend as subprocesses and drive their APIs."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Root of this repository (the folder holding ``_wsgi.py``)."""

DEFAULT_LABEL_STUDIO_BIN = REPO_ROOT / ".venv-ls" / "bin" / "label-studio"
"""Where ``make ls-venv`` installs the ``label-studio`` command."""

TASKS_PAGE_SIZE = 100
"""Tasks per page when listing; Label Studio on SQLite fails with 1,000."""

FILES_PER_IMPORT = 100
"""Files per import request; Label Studio's ``DATA_UPLOAD_MAX_NUMBER_FILES``."""

_LOG_TAIL_LINES = 60


def choices_label_config(
    labels: Sequence[str], *, from_name: str = "choice", to_name: str = "image"
) -> str:
    """Return a labeling config with one ``Image`` and one ``Choices`` control.

    The image is read from the task field ``image``.

    :param labels: the choice values, in order.
    :param from_name: name of the ``Choices`` control.
    :param to_name: name of the ``Image`` object.
    """
    choices = "".join(f'<Choice value="{label}"/>' for label in labels)
    return (
        f'<View><Image name="{to_name}" value="$image"/>'
        f'<Choices name="{from_name}" toName="{to_name}">{choices}</Choices></View>'
    )


class StartupError(RuntimeError):
    """A server subprocess did not come up; the message holds its log tail."""


class LabelStudioAPIError(RuntimeError):
    """Label Studio answered an API call with an unexpected status."""

    def __init__(self, response: requests.Response) -> None:
        request = response.request
        body = response.text[:2000]
        super().__init__(
            f"{request.method} {request.url} answered {response.status_code}: {body}"
        )
        self.response = response
        self.status_code = response.status_code


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The port is only free at the time of the call; whoever binds it should
    check that it really listens there afterwards.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a note if it is missing.

    :param path: the log file.
    :param lines: how many lines to return.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:])


def label_studio_binary() -> Path:
    """Return the ``label-studio`` command to run.

    It is taken from the environment variable ``LABEL_STUDIO_BIN`` or, when
    that is not set, from ``.venv-ls/bin/label-studio`` in the repository.

    :raises FileNotFoundError: if the command does not exist.
    """
    configured = os.environ.get("LABEL_STUDIO_BIN")
    binary = Path(configured) if configured else DEFAULT_LABEL_STUDIO_BIN
    if not binary.is_file():
        source = "LABEL_STUDIO_BIN" if configured else "the default location"
        raise FileNotFoundError(
            f"The label-studio command was not found at {binary} ({source}). "
            "Run `make ls-venv` to install Label Studio into .venv-ls, or set "
            "LABEL_STUDIO_BIN to the path of an installed label-studio command."
        )
    return binary


class ManagedProcess:
    """A server subprocess in its own process group, logging to a file.

    :param command: the command line to run.
    :param cwd: the working directory.
    :param env: the full environment of the process.
    :param log_path: file that receives both stdout and stderr.
    :param name: how error messages call the process.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        name: str,
    ) -> None:
        self.command = list(command)
        self.cwd = Path(cwd)
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.name = name
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the started command, or ``None`` before ``spawn``."""
        return self._popen.pid if self._popen else None

    def spawn(self) -> None:
        """Start the command in a new session so that its children can be killed."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self._popen = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        logger.info("started %s (pid %s): %s", self.name, self.pid, self.command)

    def exit_code(self) -> int | None:
        """Return the exit code if the process ended, else ``None``."""
        return self._popen.poll() if self._popen else None

    def fail(self, reason: str) -> StartupError:
        """Build a ``StartupError`` naming the reason and showing the log tail.

        :param reason: what went wrong, phrased for the reader of a test report.
        """
        return StartupError(
            f"{self.name} {reason}.\nCommand: {' '.join(self.command)}\n"
            f"Log: {self.log_path}\n--- last lines of the log ---\n"
            f"{log_tail(self.log_path)}"
        )

    def wait_until(
        self,
        ready: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        interval: float = 0.25,
    ) -> None:
        """Poll ``ready()`` until it returns true, the process dies or time runs out.

        :param ready: callable returning true once the server is usable.
        :param timeout: seconds to wait at most.
        :param what: description of the awaited state, for the error message.
        :param interval: seconds between polls.
        :raises StartupError: with the log tail, if the process exits or the
            timeout passes first.
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.exit_code()
            if code is not None:
                raise self.fail(f"exited with code {code} before {what}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise self.fail(f"did not reach '{what}' within {timeout:.0f} s")
            time.sleep(interval)

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the whole process group, then kill it if it lingers.

        :param grace: seconds to wait after SIGTERM before sending SIGKILL.
        """
        if self._popen is None:
            return
        popen, self._popen = self._popen, None
        _signal_group(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            logger.warning(
                "%s ignored SIGTERM for %.0f s; killing it", self.name, grace
            )
        # Children (a forked worker, a training process) may outlive the leader.
        _signal_group(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)
        logger.info("stopped %s (pid %s)", self.name, popen.pid)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _answers(url: str, *, status: int = 200, timeout: float = 2.0, **kwargs) -> bool:
    try:
        return requests.get(url, timeout=timeout, **kwargs).status_code == status
    except requests.RequestException:
        return False


class ServerHandle:
    """What every server the tests start shares: stop it, or use it in ``with``.

    Subclasses define ``start()`` (returning ``self``) and keep their running
    :class:`ManagedProcess` in ``_process``.
    """

    _process: ManagedProcess | None = None

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server and everything it started (SIGTERM, then SIGKILL)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LabelStudioProcess(ServerHandle):
    """A fresh Label Studio with its own data folder, admin user and port.

    Example::

        with LabelStudioProcess(tmp_path) as studio:
            client = studio.client()
            project = client.create_project("Planets", label_config)

    :param workdir: empty folder for the data folder and the log.
    :param binary: the ``label-studio`` command; by default
        ``label_studio_binary()``.
    :param port: port to listen on; by default a free one.
    :param username: e-mail of the admin user created at start.
    :param password: password of that user; by default a random one.
    :param legacy_token: 40 hex characters used as the admin's legacy token;
        by default a random one.
    :param extra_env: more environment variables for Label Studio.
    :param startup_timeout: seconds to wait for Label Studio to answer.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binary: Path | None = None,
        port: int | None = None,
        username: str = "admin@example.com",
        password: str | None = None,
        legacy_token: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 240.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.binary = Path(binary) if binary else label_studio_binary()
        self.port = port or free_port()
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.legacy_token = legacy_token or secrets.token_hex(20)
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.data_dir = self.workdir / "label-studio-data"
        self.log_path = self.workdir / "label-studio.log"
        self.startup_seconds: float | None = None
        self._personal_access_token: str | None = None
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL of this Label Studio, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """Return the environment Label Studio is started with."""
        env = {
            key: value
            for key, value in os.environ.items()
            # HOST would change the hostname Label Studio hands to backends.
            if key not in ("HOST", "LABEL_STUDIO_HOST", "PORT")
        }
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.legacy_token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                # Both are needed before a backend on 127.0.0.1 may connect.
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                # Nothing may leave the machine: no version check, no analytics.
                "LATEST_VERSION_CHECK": "false",
                "COLLECT_ANALYTICS": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> LabelStudioProcess:
        """Start Label Studio and wait until it answers on ``self.port``.

        :raises StartupError: if it exits, moves to another port, or does not
            answer within ``startup_timeout`` seconds.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._process = ManagedProcess(
            command,
            cwd=self.workdir,
            env=self.environment(),
            log_path=self.log_path,
            name=f"Label Studio on port {self.port}",
        )
        started = time.monotonic()
        self._process.spawn()
        try:
            self._process.wait_until(
                self._is_ready,
                timeout=self.startup_timeout,
                what=f"answering on {self.url}",
                interval=0.5,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "Label Studio ready at %s in %.1f s", self.url, self.startup_seconds
        )
        return self

    def _is_ready(self) -> bool:
        moved = f"Port {self.port} is in use"
        if moved in log_tail(self.log_path, lines=400):
            raise self._process.fail(
                f"found port {self.port} taken and silently moved to the next "
                "free port; another process grabbed the port after free_port() "
                "chose it, so start Label Studio again"
            )
        if not _answers(f"{self.url}/health"):
            return False
        # Another server could hold the port: only ours knows our token.
        response = requests.get(
            f"{self.url}/api/current-user/whoami",
            headers={"Authorization": f"Token {self.legacy_token}"},
            timeout=5,
        )
        if response.status_code != 200:
            raise self._process.fail(
                f"port {self.port} answers, but not to this instance's token "
                f"({response.status_code}); another server holds the port"
            )
        return response.json().get("email") == self.username

    def client(self) -> LabelStudioClient:
        """Return a client authenticated with the admin's legacy token."""
        return LabelStudioClient(self.url, legacy_token=self.legacy_token)

    def personal_access_token(self) -> str:
        """Return the admin's Personal Access Token, creating it on first use.

        Label Studio gives out one Personal Access Token per user (a second
        request answers 409), so it is created once and kept here.
        """
        if self._personal_access_token is None:
            self._personal_access_token = self.client().create_personal_access_token()
        return self._personal_access_token

    def pat_client(self) -> LabelStudioClient:
        """Return a client authenticated with the admin's Personal Access Token."""
        return LabelStudioClient(
            self.url, personal_access_token=self.personal_access_token()
        )


class LabelStudioClient:
    """Calls to Label Studio's HTTP API that the end-to-end tests need.

    Authenticate with either a legacy token (sent as ``Authorization: Token``)
    or a Personal Access Token, which is exchanged at ``/api/token/refresh/``
    for a short-lived access token sent as ``Authorization: Bearer``; the
    access token is renewed when Label Studio answers 401.

    :param base_url: Label Studio's address, e.g. ``http://127.0.0.1:8080``.
    :param legacy_token: a legacy API token.
    :param personal_access_token: a Personal Access Token (JWT refresh token).
    :param timeout: seconds to wait for each answer.
    """

    def __init__(
        self,
        base_url: str,
        *,
        legacy_token: str | None = None,
        personal_access_token: str | None = None,
        timeout: float = 300.0,
    ) -> None:
        if (legacy_token is None) == (personal_access_token is None):
            raise ValueError(
                "Pass exactly one of legacy_token and personal_access_token."
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self._personal_access_token = personal_access_token
        if legacy_token is not None:
            self.session.headers["Authorization"] = f"Token {legacy_token}"
        else:
            self._renew_access_token()

    # Authentication

    def _renew_access_token(self) -> None:
        access = self.refresh_access_token(self._personal_access_token)
        self.session.headers["Authorization"] = f"Bearer {access}"

    def refresh_access_token(self, personal_access_token: str) -> str:
        """Exchange a Personal Access Token for an access token.

        :param personal_access_token: the token from ``create_personal_access_token``.
        :returns: the access token, to be sent as ``Authorization: Bearer``.
        """
        response = requests.post(
            self._url("/api/token/refresh/"),
            json={"refresh": personal_access_token},
            timeout=self.timeout,
        )
        return _checked(response).json()["access"]

    def create_personal_access_token(self) -> str:
        """Create the current user's Personal Access Token (once per user).

        :raises LabelStudioAPIError: with status 409 if the user has one already.
        """
        return self._call("POST", "/api/token/").json()["token"]

    def whoami(self) -> dict[str, Any]:
        """Return the user these credentials belong to."""
        return self._call("GET", "/api/current-user/whoami").json()

    # Projects

    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        """Create a project with a labeling config and return it.

        :param title: project title.
        :param label_config: the labeling config XML.
        """
        payload = {"title": title, "label_config": label_config}
        return self._call("POST", "/api/projects/", json=payload).json()

    def get_project(self, project_id: int) -> dict[str, Any]:
        """Return a project, including its ``label_config`` and ``model_version``."""
        return self._call("GET", f"/api/projects/{project_id}/").json()

    def update_label_config(self, project_id: int, label_config: str) -> dict[str, Any]:
        """Replace a project's labeling config and return the updated project.

        :param project_id: the project.
        :param label_config: the new labeling config XML.
        """
        payload = {"label_config": label_config}
        path = f"/api/projects/{project_id}/"
        return self._call("PATCH", path, json=payload).json()

    # Tasks

    def import_files(
        self,
        project_id: int,
        paths: Iterable[Path],
        *,
        files_per_request: int = FILES_PER_IMPORT,
    ) -> list[int]:
        """Upload files as new tasks, many per request, and return the task ids.

        Every file travels under its own multipart field name: Label Studio
        keeps only one file per field name.

        :param project_id: the project.
        :param paths: image (or other) files to upload.
        :param files_per_request: files per request; Label Studio refuses more
            than ``DATA_UPLOAD_MAX_NUMBER_FILES`` (100 by default).
        :returns: ids of the created tasks, one per file.
        """
        paths = [Path(p) for p in paths]
        task_ids: list[int] = []
        for start in range(0, len(paths), files_per_request):
            chunk = paths[start : start + files_per_request]
            with contextlib.ExitStack() as stack:
                files = [
                    (f"file{index}", (path.name, stack.enter_context(open(path, "rb"))))
                    for index, path in enumerate(chunk)
                ]
                response = self._call(
                    "POST",
                    f"/api/projects/{project_id}/import",
                    params={"return_task_ids": "true"},
                    files=files,
                )
            task_ids.extend(response.json()["task_ids"])
        return task_ids

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Import tasks given as JSON (e.g. ``{"data": {"image": url}}``).

        :param project_id: the project.
        :param tasks: the tasks to create.
        :returns: ids of the created tasks.
        """
        response = self._call(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json=tasks,
        )
        return response.json()["task_ids"]

    def list_tasks(
        self, project_id: int, *, with_predictions: bool = False
    ) -> list[dict[str, Any]]:
        """Return all tasks of a project, fetched in pages of 100.

        :param project_id: the project.
        :param with_predictions: also return each task's annotations and
            predictions (``fields=all``).
        """
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"project": project_id, "page": page, "page_size": TASKS_PAGE_SIZE}
            if with_predictions:
                params["fields"] = "all"
            body = self._call("GET", "/api/tasks/", params=params).json()
            tasks.extend(body["tasks"])
            if not body["tasks"] or len(tasks) >= body["total"]:
                return tasks
            page += 1

    def get_task(self, task_id: int) -> dict[str, Any]:
        """Return a task with its annotations and predictions.

        Like the labeling page, this asks the connected ML backend for a
        prediction first if the task has none yet.
        """
        return self._call("GET", f"/api/tasks/{task_id}/").json()

    def list_predictions(self, task_id: int) -> list[dict[str, Any]]:
        """Return the predictions stored for a task, without asking a backend."""
        params = {"task": task_id}
        return self._call("GET", "/api/predictions/", params=params).json()

    def list_project_predictions(self, project_id: int) -> list[dict[str, Any]]:
        """Return every prediction stored in a project, of all model versions.

        :param project_id: the project.
        """
        params = {"project": project_id}
        return self._call("GET", "/api/predictions/", params=params).json()

    def create_annotation(
        self, task_id: int, *, from_name: str, to_name: str, choice: str
    ) -> dict[str, Any]:
        """Annotate a task with one choice of a ``Choices`` control.

        :param task_id: the task.
        :param from_name: name of the ``Choices`` control.
        :param to_name: name of the object it labels, e.g. the ``Image``.
        :param choice: the chosen value.
        """
        result = {
            "from_name": from_name,
            "to_name": to_name,
            "type": "choices",
            "value": {"choices": [choice]},
        }
        path = f"/api/tasks/{task_id}/annotations/"
        return self._call("POST", path, json={"result": [result]}).json()

    def download(self, url: str) -> bytes:
        """Fetch a file served by Label Studio (e.g. ``/data/upload/...``).

        :param url: an absolute URL or a path on this Label Studio.
        """
        return self._call("GET", url).content

    # ML backends

    def connect_ml_backend(
        self, project_id: int, url: str, title: str = "ML backend"
    ) -> dict[str, Any]:
        """Connect an ML backend to a project, as the model settings page does.

        Label Studio calls the backend's ``/health`` and ``/setup`` before it
        answers, and registers a webhook to ``<url>/webhook``.

        :param project_id: the project.
        :param url: the backend's base URL.
        :param title: name shown in Label Studio.
        :returns: the ML backend, with ``id``, ``state`` and ``model_version``.
        """
        payload = {"url": url, "project": project_id, "title": title}
        return self._call("POST", "/api/ml/", json=payload).json()

    def get_ml_backend(self, ml_backend_id: int) -> dict[str, Any]:
        """Return an ML backend after Label Studio checked it again.

        Label Studio calls ``/health`` and ``/setup`` on every read, so
        ``state`` and ``model_version`` are current.
        """
        return self._call("GET", f"/api/ml/{ml_backend_id}").json()

    def list_ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        """Return the ML backends of a project, each checked again."""
        params = {"project": project_id}
        return self._call("GET", "/api/ml/", params=params).json()

    def retrieve_predictions(
        self, project_id: int, task_ids: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """Run Data Manager's "Retrieve predictions" action.

        Label Studio sends every selected task that has no prediction of the
        current model version to the backend in one ``/predict`` request and
        stores the answers before it replies.

        :param project_id: the project.
        :param task_ids: tasks to select; ``None`` selects all tasks.
        :returns: Label Studio's answer, e.g. ``{"processed_items": 3, ...}``.
        """
        if task_ids is None:
            selected = {"all": True, "excluded": []}
        else:
            selected = {"all": False, "included": list(task_ids)}
        return self._call(
            "POST",
            "/api/dm/actions/",
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": selected},
        ).json()

    def start_training(self, ml_backend_id: int) -> None:
        """Press "Start Training" on the model settings page.

        Label Studio posts ``{"action": "START_TRAINING", "project": {...}}`` to
        the backend's ``/webhook``. It answers 200 even when the backend
        fails; the backend's failure only shows in the backend's state.
        """
        self._call("POST", f"/api/ml/{ml_backend_id}/train")

    # Plumbing

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + path_or_url

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        url = self._url(path)
        response = self.session.request(method, url, **kwargs)
        if response.status_code == 401 and self._personal_access_token:
            self._renew_access_token()
            _rewind_files(kwargs.get("files"))
            response = self.session.request(method, url, **kwargs)
        return _checked(response)


def _rewind_files(files: list | None) -> None:
    for _, (_, handle) in files or []:
        handle.seek(0)


def _checked(response: requests.Response) -> requests.Response:
    if response.status_code >= 400:
        raise LabelStudioAPIError(response)
    return response


class BackendProcess(ServerHandle):
    """This project's ML backend (or any ``_wsgi.py`` app) on a free port.

    Two ways to run it, as a user would:

    - ``"label-studio-ml"``: ``label-studio-ml start .`` in ``app_dir`` with
      ``PORT`` set; the SDK runs ``python _wsgi.py``, so the virtualenv's
      ``bin`` folder goes first on ``PATH``.
    - ``"gunicorn"``: ``gunicorn --bind 127.0.0.1:<port> --workers 2
      --threads 4 --timeout 120 _wsgi:app`` in ``app_dir``.

    :param mode: ``"label-studio-ml"`` or ``"gunicorn"``.
    :param workdir: folder for the log file.
    :param app_dir: folder holding ``_wsgi.py``; by default the repository.
    :param venv: virtualenv whose ``bin`` holds ``label-studio-ml``,
        ``gunicorn`` and ``python``; by default the repository's ``.venv``.
    :param env: more environment variables (``MODEL_TAG``, ``BENTOML_HOME``,
        ``LABEL_STUDIO_URL``, ...).
    :param port: port to listen on; by default a free one.
    :param startup_timeout: seconds to wait for ``GET /health`` to answer 200.
    """

    MODES = ("label-studio-ml", "gunicorn")

    def __init__(
        self,
        mode: str,
        workdir: Path,
        *,
        app_dir: Path | None = None,
        venv: Path | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"Unknown backend mode {mode!r}; use one of {self.MODES}.")
        self.mode = mode
        self.workdir = Path(workdir)
        self.app_dir = Path(app_dir) if app_dir else REPO_ROOT
        self.venv = Path(venv) if venv else REPO_ROOT / ".venv"
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.log_path = self.workdir / f"backend-{mode}-{self.port}.log"
        self.startup_seconds: float | None = None
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL of the backend, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the started server (gunicorn's master), or ``None``."""
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        """Return the command line for the chosen mode."""
        bin_dir = self.venv / "bin"
        if self.mode == "label-studio-ml":
            return [str(bin_dir / "label-studio-ml"), "start", "."]
        return [
            str(bin_dir / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "120",
            "_wsgi:app",
        ]

    def environment(self) -> dict[str, str]:
        """Return the environment the backend is started with."""
        env = dict(os.environ)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PORT"] = str(self.port)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        env["BENTOML_DO_NOT_TRACK"] = "True"
        return env

    def start(self) -> BackendProcess:
        """Start the backend and wait until ``GET /health`` answers 200.

        :raises StartupError: with the log tail, if it exits or does not answer
            within ``startup_timeout`` seconds.
        """
        executable = Path(self.command()[0])
        if not executable.is_file():
            raise FileNotFoundError(
                f"{executable} does not exist. Create the virtualenv with the "
                "backend's requirements (`make venv`) or pass venv=..."
            )
        self._process = ManagedProcess(
            self.command(),
            cwd=self.app_dir,
            env=self.environment(),
            log_path=self.log_path,
            name=f"ML backend ({self.mode}) on port {self.port}",
        )
        started = time.monotonic()
        self._process.spawn()
        try:
            self._process.wait_until(
                lambda: _answers(f"{self.url}/health"),
                timeout=self.startup_timeout,
                what=f"GET {self.url}/health answering 200",
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("ML backend ready at %s in %.1f s", self.url, self.startup_seconds)
        return self

    def log(self) -> str:
        """Return everything the backend has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")
