"""Running the served network on images, and keeping the served version current."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from backend import store

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClassScores:
    """What the model says about one image.

    :param label: the most probable class.
    :param score: its probability.
    :param probabilities: every class with its probability.
    """

    label: str
    score: float
    probabilities: dict[str, float]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _classes_from_postprocess(postprocess: Callable, count: int) -> list[str]:
    """Recover the class order of a model that only ships a ``postprocess``.

    A guide-style model keeps its class names inside ``postprocess``; feeding it
    one-hot logits, one class at a time, reads them back in output order.
    """
    classes = []
    for index in range(count):
        logits = np.full((1, count), -10.0, dtype=np.float32)
        logits[0, index] = 10.0
        classes.append(str(postprocess(logits)["prediction"]))
    return classes


class LoadedModel:
    """One model version in memory, ready to classify images.

    :param version: the store entry it was loaded from.
    :param network: the Keras network.
    :param preprocess: turns one Pillow image into a batch of one.
    :param postprocess: turns logits into ``{"prediction", "probabilities"}``.
    """

    def __init__(
        self,
        version: store.ModelVersion,
        network: Any,
        preprocess: Callable,
        postprocess: Callable | None,
    ) -> None:
        if preprocess is None:
            raise store.ModelNotFound(
                f"Model {version.tag} has no 'preprocess' custom object; save it"
                " with custom_objects={'preprocess': ..., 'postprocess': ...}."
            )
        self.version = version
        self.network = network
        self.preprocess = preprocess
        self.postprocess = postprocess
        outputs = int(network.output_shape[-1])
        classes = version.metadata.get("classes")
        if classes:
            self.classes = [str(name) for name in classes]
            self._outputs_logits = version.metadata.get("output", "logits") == "logits"
        elif postprocess is not None:
            self.classes = _classes_from_postprocess(postprocess, outputs)
            self._outputs_logits = False
        else:
            raise store.ModelNotFound(
                f"Model {version.tag} names no classes: save it with a"
                " 'postprocess' custom object or metadata={'classes': [...]}."
            )
        self._lock = threading.Lock()

    @property
    def tag(self) -> str:
        """The BentoML tag, ``name:version``; Label Studio shows it as the version."""
        return self.version.tag

    @classmethod
    def load(cls, version: store.ModelVersion) -> LoadedModel:
        """Load a store version into memory."""
        started = time.monotonic()
        network, preprocess, postprocess = store.load_network(version)
        model = cls(version, network, preprocess, postprocess)
        logger.info(
            "Loaded model %s in %.1f s: %d classes (%s)",
            model.tag,
            time.monotonic() - started,
            len(model.classes),
            ", ".join(model.classes),
        )
        return model

    def to_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess images with the model's own ``preprocess`` into one batch."""
        return np.concatenate(
            [np.asarray(self.preprocess(image), dtype=np.float32) for image in images]
        )

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities, one row per image of a preprocessed batch."""
        with self._lock:
            logits = np.asarray(self.network(batch, training=False))
        if self._outputs_logits:
            return _softmax(logits.astype(np.float64))
        rows = []
        for row in logits:
            scores = self.postprocess(row[None, :])["probabilities"]
            rows.append([float(scores[name]) for name in self.classes])
        return np.asarray(rows)

    def classify(
        self, images: Sequence[Image.Image], batch_size: int = 64
    ) -> list[ClassScores]:
        """Classify images in batches, answering in their order."""
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            for row in self.probabilities(self.to_batch(chunk)):
                best = int(np.argmax(row))
                results.append(
                    ClassScores(
                        label=self.classes[best],
                        score=float(row[best]),
                        probabilities=dict(zip(self.classes, map(float, row))),
                    )
                )
        return results


class ServedModel:
    """The model version this process serves, kept in step with the store.

    With ``MODEL_TAG=name:latest`` the newest version that training did not
    reject is served, and a newly promoted version replaces it within
    ``refresh_seconds``; a pinned ``name:version`` never changes.

    :param model_tag: the ``MODEL_TAG`` setting.
    :param refresh_seconds: how often to look for a new version.
    """

    def __init__(self, model_tag: str, refresh_seconds: float = 2.0) -> None:
        self._model_tag = model_tag
        self._name = model_tag.partition(":")[0]
        self._pinned = model_tag.partition(":")[2] not in ("", "latest")
        self._refresh_seconds = refresh_seconds
        self._current: LoadedModel | None = None
        self._marker: tuple[float, ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def load(self) -> LoadedModel:
        """Load the version the tag stands for now (at start-up)."""
        with self._lock:
            self._marker = store.change_marker(self._name)
            self._checked = time.monotonic()
            version = store.resolve(self._model_tag)
            self._current = LoadedModel.load(version)
            return self._current

    def current_tag(self) -> str | None:
        """The tag served now, without looking at the store (None before loading)."""
        return self._current.tag if self._current else None

    def get(self) -> LoadedModel:
        """The model to use for this request.

        With a watcher running (see :meth:`watch`) this never waits for the
        store; without one it looks for a new version at most every
        ``refresh_seconds``, loading it in the calling thread.
        """
        current = self._current or self.load()
        due = time.monotonic() - self._checked >= self._refresh_seconds
        if self._watcher is None and not self._pinned and due:
            self.refresh()
        return self._current or current

    def refresh(self) -> bool:
        """Serve the version the tag stands for now, if the store changed.

        Returns whether the served version changed. A version that fails to
        load is logged and the current one keeps serving.
        """
        with self._lock:
            self._checked = time.monotonic()
            marker = store.change_marker(self._name)
            if marker == self._marker:
                return False
            self._marker = marker
            previous = self.current_tag()
        try:
            version = store.resolve(self._model_tag)
            if version.tag == previous:
                return False
            loaded = LoadedModel.load(version)
        except Exception:
            logger.exception(
                "Could not load the newest model version; still serving %s",
                previous,
            )
            return False
        self._current = loaded
        logger.info("Now serving %s (was %s)", loaded.tag, previous)
        return True

    def watch(self) -> None:
        """Look for promoted versions in a background thread of this process.

        Requests then never wait for a model to load: the new version replaces
        the old one once it is in memory. Call it after the process forked
        (gunicorn workers each call it when they build the app).
        """
        if self._pinned or self._watcher is not None:
            return

        def loop() -> None:
            while True:
                time.sleep(max(self._refresh_seconds, 0.2))
                try:
                    self.refresh()
                except Exception:
                    logger.exception("Looking for a new model version failed")

        self._watcher = threading.Thread(target=loop, name="model-watcher", daemon=True)
        self._watcher.start()
