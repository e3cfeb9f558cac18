"""The objects one backend process shares: settings, served model, image loader."""

from __future__ import annotations

import functools
import logging

from backend.images import ImageLoader
from backend.inference import ServedModel
from backend.label_config import ClassificationTarget, parse_label_config
from backend.labelstudio import ConnectionRegistry
from backend.settings import Settings

logger = logging.getLogger(__name__)

_current: Service | None = None


class Service:
    """Everything a request or a training run needs, built once per process.

    :param settings: the backend's settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections = ConnectionRegistry(
            settings.label_studio_url,
            settings.label_studio_api_key,
            timeout=settings.image_timeout,
            state_file=settings.model_dir / "label-studio-connection.json",
        )
        self.loader = ImageLoader(
            self.connections.get,
            settings.cache_dir,
            max_bytes=settings.image_max_bytes,
            timeout=settings.image_timeout,
            workers=settings.download_workers,
            upload_dir=settings.upload_dir,
            local_files_root=settings.local_files_root,
        )
        self.served = ServedModel(settings.model_tag, settings.model_refresh_seconds)
        self._jobs = None

    @property
    def jobs(self):
        """The training job manager (built on first use)."""
        if self._jobs is None:
            from backend.jobs import TrainingJobManager

            self._jobs = TrainingJobManager(self)
        return self._jobs

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def target(label_config: str) -> ClassificationTarget:
        """The parsed Choices/Image of a labeling config (cached by its text)."""
        return parse_label_config(label_config)


def install(service: Service) -> Service:
    """Make ``service`` the one this process uses."""
    global _current
    _current = service
    return service


def current() -> Service:
    """The service of this process.

    :raises RuntimeError: when none was installed; build the app with
        ``backend.server.create_app`` (``_wsgi.py`` does) first.
    """
    if _current is None:
        raise RuntimeError(
            "The backend service is not set up in this process; start it through"
            " _wsgi.py (label-studio-ml start . or gunicorn _wsgi:app)."
        )
    return _current
