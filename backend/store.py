"""The BentoML model store: which versions exist, which one serves, saving new ones."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# BentoML reports usage to its vendor on every save unless told not to, and this
# backend must make no calls to the internet.
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bentoml
from bentoml._internal.configuration.containers import (
    BentoMLContainer,
)
from bentoml.exceptions import BentoMLException, NotFound

logger = logging.getLogger(__name__)

STAGE_LABEL = "stage"
PROMOTED = "promoted"
REJECTED = "rejected"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"


class ModelNotFound(LookupError):
    """The store has no servable version of the configured model."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One version of a model in the store, as listed without loading it.

    :param tag: ``name:version``.
    :param created: when BentoML saved it.
    :param stage: ``promoted``, ``rejected``, or ``imported`` for a version this
        backend did not train (such as the guide's own model).
    :param metadata: what the backend saved with it (classes, metrics, ...).
    :param path: its folder in the store.
    """

    tag: str
    created: datetime.datetime
    stage: str
    metadata: dict[str, Any]
    path: Path

    @property
    def servable(self) -> bool:
        """Whether this version may be served (it was not rejected)."""
        return self.stage != REJECTED

    @property
    def accuracy(self) -> float | None:
        """Held-out accuracy saved with the version, if any."""
        value = self.metadata.get("metrics", {}).get("accuracy")
        return float(value) if value is not None else None


def _store_root() -> Path:
    return Path(BentoMLContainer.model_store_dir.get())


def _describe(model: bentoml.Model) -> ModelVersion:
    return ModelVersion(
        tag=str(model.tag),
        created=model.creation_time,
        stage=model.info.labels.get(STAGE_LABEL, "imported"),
        metadata=dict(model.info.metadata),
        path=Path(model.path),
    )


def list_versions(name: str) -> list[ModelVersion]:
    """Every readable version of model ``name``, newest first.

    A version folder that BentoML cannot read is left out and logged.
    """
    root = _store_root() / name
    if not root.is_dir():
        return []
    versions = []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        try:
            versions.append(_describe(bentoml.models.get(f"{name}:{folder.name}")))
        except (BentoMLException, OSError, ValueError) as exc:
            logger.warning(
                "Skipping unreadable model version %s:%s: %s", name, folder.name, exc
            )
    versions.sort(key=lambda version: version.created, reverse=True)
    return versions


def resolve(model_tag: str) -> ModelVersion:
    """The version a tag stands for.

    ``name:latest`` (or a bare name) is the newest version that was not
    rejected by training; ``name:version`` is that version exactly.

    :raises ModelNotFound: when there is no such version; the message says how
        to get one.
    """
    name, _, version = model_tag.partition(":")
    if version and version != "latest":
        try:
            return _describe(bentoml.models.get(model_tag))
        except (NotFound, BentoMLException) as exc:
            raise ModelNotFound(
                f"The BentoML store has no model {model_tag} ({exc}). List what it"
                " has with `python -m backend models`, or set MODEL_TAG to"
                f" {name}:latest."
            ) from None
    for candidate in list_versions(name):
        if candidate.servable:
            return candidate
    raise ModelNotFound(
        f"The BentoML store ({_store_root()}) has no servable version of model"
        f" {name!r}. Train one with `python -m backend train DATA_DIR`, import one"
        " with `python -m backend import FILE.bentomodel`, or run `make run`."
    )


def change_marker(name: str) -> tuple[float, ...]:
    """A cheap value that changes whenever a version of ``name`` is added."""
    folder = _store_root() / name
    try:
        return (folder.stat().st_mtime, (folder / "latest").stat().st_mtime)
    except OSError:
        return (0.0, 0.0)


def _write_latest(name: str, version: str) -> None:
    folder = _store_root() / name
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".latest-")
    with os.fdopen(handle, "w") as out:
        out.write(version)
    os.replace(temporary, folder / "latest")


def _storable(value: Any) -> Any:
    """``value`` without the ``None`` entries BentoML refuses in metadata."""
    if isinstance(value, dict):
        return {str(k): _storable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value if v is not None]
    return value


def save_version(
    name: str,
    network: Any,
    *,
    custom_objects: dict[str, Any],
    external_modules: list,
    metadata: dict[str, Any],
    stage: str,
    extra_files: dict[str, bytes] | None = None,
) -> ModelVersion:
    """Save a Keras network as a new version of ``name``, all at once.

    The version is written to a staging folder beside the store and moved into
    it with one rename, so a process killed while saving never leaves a
    half-written version in the store. A promoted version also becomes the
    store's ``latest``, which is what the guide's own BentoML service loads.

    :param name: the BentoML model name.
    :param network: the Keras model.
    :param custom_objects: saved with it (``preprocess`` and ``postprocess``).
    :param external_modules: modules whose functions are pickled by value.
    :param metadata: JSON-like values saved in ``model.yaml``.
    :param stage: ``promoted`` or ``rejected``.
    :param extra_files: more files to put in the version folder (name: bytes).
    """
    store_root = _store_root()
    staging_root = Path(
        tempfile.mkdtemp(prefix="staging-", dir=store_root.parent / "tmp")
    )
    # BentoML copies a new version straight into its store; pointing it at a
    # staging store first makes the final move into the real one atomic.
    store_class = type(BentoMLContainer.model_store.get())
    BentoMLContainer.model_store.set(store_class(str(staging_root)))
    try:
        saved = bentoml.keras.save_model(
            name,
            network,
            include_optimizer=True,
            labels={STAGE_LABEL: stage},
            custom_objects=custom_objects,
            external_modules=external_modules,
            metadata=_storable(metadata),
        )
    finally:
        BentoMLContainer.model_store.reset()
    version = saved.tag.version
    staged = staging_root / name / version
    for file_name, data in (extra_files or {}).items():
        (staged / file_name).write_bytes(data)
    (store_root / name).mkdir(parents=True, exist_ok=True)
    os.rename(staged, store_root / name / version)
    shutil.rmtree(staging_root, ignore_errors=True)
    if stage != REJECTED:
        _write_latest(name, version)
    logger.info("Saved model version %s (%s)", saved.tag, stage)
    return _describe(bentoml.models.get(f"{name}:{version}"))


def sweep_staging() -> None:
    """Remove what killed saves left in the staging area."""
    tmp = _store_root().parent / "tmp"
    for folder in tmp.glob("staging-*") if tmp.is_dir() else ():
        shutil.rmtree(folder, ignore_errors=True)


def import_file(path: Path) -> ModelVersion:
    """Import a ``.bentomodel`` file exported with ``bentoml models export``."""
    model = bentoml.models.import_model(str(path))
    logger.info("Imported model %s from %s", model.tag, path)
    return _describe(bentoml.models.get(str(model.tag)))


def load_network(version: ModelVersion) -> tuple[Any, Callable, Callable]:
    """Load a version's Keras network and its ``preprocess`` / ``postprocess``."""
    model = bentoml.models.get(version.tag)
    custom = model.custom_objects or {}
    network = bentoml.keras.load_model(model)
    return network, custom.get("preprocess"), custom.get("postprocess")
