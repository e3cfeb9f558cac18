"""Fixtures that start a real Label Studio and this project's ML backend."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .labelstudio import (
    REPO_ROOT,
    BackendProcess,
    LabelStudioClient,
    LabelStudioProcess,
    choices_label_config,
)

CELESTIAL_BODIES_DIR = REPO_ROOT / "data" / "celestial-bodies"
"""The bundled JPEGs: ``<Class>/<Class>_<N>.jpg``."""


@pytest.fixture(scope="session")
def label_studio(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabelStudioProcess]:
    """A Label Studio started once per test session, stopped at its end.

    It offers ``url``, ``username``, ``password``, ``legacy_token``,
    ``client()`` (legacy token), ``personal_access_token()`` and
    ``pat_client()`` (Personal Access Token, exchanged for Bearer tokens).
    """
    studio = LabelStudioProcess(tmp_path_factory.mktemp("label-studio"))
    studio.start()
    try:
        yield studio
    finally:
        studio.stop()


@pytest.fixture
def ls_client(label_studio: LabelStudioProcess) -> LabelStudioClient:
    """A client of the session's Label Studio, using the admin's legacy token."""
    return label_studio.client()


@pytest.fixture
def make_project(
    label_studio: LabelStudioProcess, request: pytest.FixtureRequest
) -> Callable[..., dict[str, Any]]:
    """Factory creating a fresh project named after the test.

    Call it as ``make_project(label_config=None, title=None)``; the default
    labeling config is an ``Image`` named ``image`` and a ``Choices`` named
    ``choice`` with the labels ``Earth`` and ``Mars``.
    """
    client = label_studio.client()
    counter = itertools.count(1)

    def make(
        label_config: str | None = None, title: str | None = None
    ) -> dict[str, Any]:
        config = label_config or choices_label_config(["Earth", "Mars"])
        name = title or f"{request.node.name[:40]} {next(counter)}"
        return client.create_project(name, config)

    return make


@pytest.fixture(scope="session")
def celestial_images() -> dict[str, list[Path]]:
    """The bundled JPEGs by class name, each list in the order of their number."""
    images = {
        folder.name: sorted(folder.glob("*.jpg"), key=_image_number)
        for folder in sorted(CELESTIAL_BODIES_DIR.iterdir())
        if folder.is_dir()
    }
    if not images:
        raise FileNotFoundError(
            f"No bundled images under {CELESTIAL_BODIES_DIR}; restore the "
            "data/celestial-bodies folder of the repository."
        )
    return images


def _image_number(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


@pytest.fixture
def backend_server(tmp_path: Path) -> Iterator[Callable[..., BackendProcess]]:
    """Factory starting an ML backend on a free port, stopped after the test.

    Call it as ``backend_server(mode, env=None, app_dir=None, ...)`` where
    ``mode`` is ``"label-studio-ml"`` or ``"gunicorn"`` and ``env`` holds
    variables such as ``BENTOML_HOME``, ``MODEL_TAG``, ``MODEL_DIR``,
    ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``. It returns once
    ``GET /health`` answers 200 (90 s at most) and raises ``StartupError``
    with the log tail otherwise. Further keywords go to ``BackendProcess``.
    """
    started: list[BackendProcess] = []

    def start(
        mode: str,
        env: Mapping[str, str] | None = None,
        app_dir: Path | None = None,
        **kwargs: Any,
    ) -> BackendProcess:
        backend = BackendProcess(
            mode, tmp_path, app_dir=app_dir or REPO_ROOT, env=env, **kwargs
        )
        started.append(backend)
        return backend.start()

    yield start
    for backend in reversed(started):
        backend.stop()
