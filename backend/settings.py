"""Every setting of the backend, read from the environment in one place."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_MODEL_TAG = "celestial_bodies_classifier_model:latest"
REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """An environment variable holds a value the backend cannot use."""


def _default_data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "bentoml-label-studio-backend"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The backend's configuration.

    Build it with :func:`load_settings`; every other module receives it instead
    of reading ``os.environ``. The README's "Configuration" table documents
    each field with its variable and default.
    """

    model_tag: str = DEFAULT_MODEL_TAG
    bentoml_home: Path | None = None
    host: str = "0.0.0.0"
    port: int = 9090
    model_dir: Path = dataclasses.field(default_factory=_default_data_home)
    log_level: str = "INFO"

    label_studio_url: str = ""
    label_studio_api_key: str = ""

    image_cache_dir: Path | None = None
    image_max_bytes: int = 20 * 1024 * 1024
    image_timeout: float = 10.0
    download_workers: int = 8
    upload_dir: Path | None = None
    local_files_root: Path | None = None

    predict_batch_size: int = 64
    model_refresh_seconds: float = 2.0

    train_every: int = 10
    train_min_per_class: int = 3
    train_holdout: float = 0.2
    train_extra_data_dir: Path | None = None
    train_seed: int = 0

    training_queue: str = "local"
    redis_url: str = "redis://localhost:6379/0"
    rq_queue_name: str = "label-studio-training"

    @property
    def cache_dir(self) -> Path:
        """Where downloaded task images are cached."""
        return self.image_cache_dir or self.model_dir / "image-cache"

    @property
    def model_name(self) -> str:
        """The BentoML model name of :attr:`model_tag`, without its version."""
        return self.model_tag.split(":", 1)[0]

    @property
    def pinned_version(self) -> str | None:
        """The version named in :attr:`model_tag`, or None for ``latest``."""
        _, _, version = self.model_tag.partition(":")
        return None if version in ("", "latest") else version

    @property
    def uses_queue(self) -> bool:
        """Whether training runs go to the RQ queue instead of a local process."""
        return self.training_queue == "redis"


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value).expanduser() if value else None


def _number(env: Mapping[str, str], name: str, default, kind, minimum=None):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a valid {kind.__name__}; set it to a number"
            f" such as {default!r}, or unset it to use that default."
        ) from None
    if minimum is not None and value < minimum:
        raise SettingsError(
            f"{name}={raw!r} is below its minimum {minimum}; set it to at least"
            f" {minimum} (default {default!r})."
        )
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices) -> str:
    value = _text(env, name, default).lower()
    if value not in choices:
        raise SettingsError(
            f"{name}={value!r} is not one of {', '.join(choices)}; pick one of"
            f" those (default {default!r})."
        )
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from environment variables.

    :param env: the variables to read; defaults to ``os.environ``.
    :raises SettingsError: when a variable holds an unusable value; the message
        names the variable and what it expects.
    """
    env = os.environ if env is None else env
    model_tag = _text(env, "MODEL_TAG", DEFAULT_MODEL_TAG)
    if ":" not in model_tag:
        model_tag += ":latest"
    holdout = _number(env, "TRAIN_HOLDOUT", 0.2, float, 0.05)
    if holdout >= 0.9:
        raise SettingsError(
            f"TRAIN_HOLDOUT={holdout} leaves too little to train on; use a"
            " fraction between 0.05 and 0.5, such as 0.2."
        )
    return Settings(
        model_tag=model_tag,
        bentoml_home=_path(env, "BENTOML_HOME"),
        host=_text(env, "HOST", "0.0.0.0"),
        port=_number(env, "PORT", 9090, int, 1),
        model_dir=_path(env, "MODEL_DIR") or _default_data_home(),
        log_level=_choice(
            env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")
        ).upper(),
        label_studio_url=_text(env, "LABEL_STUDIO_URL", "").rstrip("/"),
        label_studio_api_key=_text(env, "LABEL_STUDIO_API_KEY", ""),
        image_cache_dir=_path(env, "IMAGE_CACHE_DIR"),
        image_max_bytes=_number(env, "IMAGE_MAX_BYTES", 20 * 1024 * 1024, int, 1),
        image_timeout=_number(env, "IMAGE_TIMEOUT", 10.0, float, 0.1),
        download_workers=_number(env, "DOWNLOAD_WORKERS", 8, int, 1),
        upload_dir=_path(env, "LABEL_STUDIO_UPLOAD_DIR"),
        local_files_root=_path(env, "LOCAL_FILES_DOCUMENT_ROOT"),
        predict_batch_size=_number(env, "PREDICT_BATCH_SIZE", 64, int, 1),
        model_refresh_seconds=_number(env, "MODEL_REFRESH_SECONDS", 2.0, float, 0),
        train_every=_number(env, "TRAIN_EVERY", 10, int, 1),
        train_min_per_class=_number(env, "TRAIN_MIN_PER_CLASS", 3, int, 1),
        train_holdout=holdout,
        train_extra_data_dir=_path(env, "TRAIN_EXTRA_DATA_DIR"),
        train_seed=_number(env, "TRAIN_SEED", 0, int, 0),
        training_queue=_choice(env, "TRAINING_QUEUE", "local", ("local", "redis")),
        redis_url=_text(env, "REDIS_URL", "redis://localhost:6379/0"),
        rq_queue_name=_text(env, "RQ_QUEUE_NAME", "label-studio-training"),
    )
