"""Build and store a model the way a user of the MLOps guide has one, for tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import bentoml
import keras
import numpy as np
from PIL import Image

GUIDE_MODEL_NAME = "celestial_bodies_classifier_model"
GUIDE_INPUT_SIZE = 32
GUIDE_SEED = 5241
GUIDE_EPOCHS = 5
GUIDE_LEARNING_RATE = 1e-4
GUIDE_BATCH_SIZE = 32


def images_by_class(data_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """List the JPEG images of a folder-per-class data directory.

    :param data_dir: folder holding one subfolder of images per class.
    :return: class name to image paths, classes and files both in sorted order
        (plain string order of the file names).
    """
    root = Path(data_dir)
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    if not folders:
        raise ValueError(
            f"{root} holds no class folders; pass a data directory with one "
            "subfolder of images per class, such as data/celestial-bodies."
        )
    return {
        folder.name: sorted(
            (path for path in folder.iterdir() if path.suffix.lower() == ".jpg"),
            key=lambda path: path.name,
        )
        for folder in folders
    }


def make_custom_objects(labels: Sequence[str]) -> dict[str, Callable]:
    """Build the guide's ``preprocess`` and ``postprocess`` for the given labels.

    Both are closures made here, so cloudpickle stores them by value: a process
    that loads the model from the store can call them without this module.

    :param labels: class names in the order of the network's outputs.
    :return: ``{"preprocess": ..., "postprocess": ...}``.
    """
    names = [str(label) for label in labels]
    size = GUIDE_INPUT_SIZE

    def preprocess(image):
        gray = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.asarray(gray, dtype=np.float32) / np.float32(255.0)
        return pixels[np.newaxis, :, :, np.newaxis]

    def postprocess(logits):
        row = np.asarray(logits, dtype=np.float64).reshape(-1, len(names))[0]
        weights = np.exp(row - row.max())
        probabilities = weights / weights.sum()
        return {
            "prediction": names[int(np.argmax(probabilities))],
            "probabilities": {
                name: float(value) for name, value in zip(names, probabilities)
            },
        }

    return {"preprocess": preprocess, "postprocess": postprocess}


def build_guide_model(num_classes: int) -> keras.Model:
    """Build the guide's small network (grayscale 32 x 32 input, logits output).

    :param num_classes: number of outputs of the last layer.
    """
    return keras.Sequential(
        [
            keras.Input((GUIDE_INPUT_SIZE, GUIDE_INPUT_SIZE, 1)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((3, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


def train_guide_style_model(
    data_dir: str | os.PathLike,
    per_class: int | None = None,
    files: Iterable[str | os.PathLike] | None = None,
) -> tuple[keras.Model, list[str]]:
    """Train the guide's network the guide's way on images of ``data_dir``.

    :param data_dir: folder holding one subfolder of images per class; the
        classes are the subfolder names in sorted order.
    :param per_class: train on only the first ``per_class`` images of each class
        (by sorted file name), leaving the others unseen.
    :param files: train on exactly these images instead (absolute, or relative
        to ``data_dir``); each must lie in a class folder of ``data_dir``.
    :return: the trained model, compiled with its optimizer, and the labels in
        the order of its outputs.
    """
    if per_class is not None and files is not None:
        raise ValueError("Pass either per_class or files, not both.")
    catalogue = images_by_class(data_dir)
    labels = list(catalogue)
    if files is None:
        chosen = [
            (path, index)
            for index, label in enumerate(labels)
            for path in catalogue[label][:per_class]
        ]
    else:
        chosen = [_labelled_file(Path(data_dir), Path(f), labels) for f in files]
    if not chosen:
        raise ValueError("No training images were selected; check per_class/files.")

    preprocess = make_custom_objects(labels)["preprocess"]
    batches = []
    for path, _ in chosen:
        with Image.open(path) as image:
            batches.append(preprocess(image))
    x = np.concatenate(batches)
    y = np.array([index for _, index in chosen])

    keras.utils.set_random_seed(GUIDE_SEED)
    model = build_guide_model(len(labels))
    model.compile(
        optimizer=keras.optimizers.Adam(GUIDE_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=GUIDE_BATCH_SIZE, epochs=GUIDE_EPOCHS, verbose=0)
    return model, labels


def save_guide_style_model(
    data_dir: str | os.PathLike,
    name: str = GUIDE_MODEL_NAME,
    per_class: int | None = None,
    files: Iterable[str | os.PathLike] | None = None,
) -> bentoml.Model:
    """Train a guide-style model and save it to the BentoML store as the guide does.

    The store must be a temporary one: set ``BENTOML_HOME`` to a temporary
    folder before calling (and before anything else in the process touches the
    store), so that a test never writes into a user's own store.

    :param data_dir: folder holding one subfolder of images per class.
    :param name: model name in the store.
    :param per_class: see :func:`train_guide_style_model`.
    :param files: see :func:`train_guide_style_model`.
    :return: the saved BentoML model (its tag names the new version).
    """
    _require_own_store()
    model, labels = train_guide_style_model(data_dir, per_class=per_class, files=files)
    return bentoml.keras.save_model(
        name,
        model,
        include_optimizer=True,
        custom_objects=make_custom_objects(labels),
    )


def _labelled_file(root: Path, path: Path, labels: list[str]) -> tuple[Path, int]:
    full = path if path.is_absolute() else root / path
    if full.parent.parent.resolve() != root.resolve() or full.parent.name not in labels:
        raise ValueError(
            f"{path} is not in a class folder of {root}; pass images that lie in "
            "one of its subfolders."
        )
    return full, labels.index(full.parent.name)


def _require_own_store() -> None:
    home = os.environ.get("BENTOML_HOME")
    if not home:
        raise RuntimeError(
            "BENTOML_HOME is not set. Set it to a temporary folder (for example "
            "with pytest's tmp_path and monkeypatch.setenv) before saving a test "
            "model, so that the user's own BentoML store is left alone."
        )
    from bentoml._internal.configuration.containers import BentoMLContainer

    store = Path(BentoMLContainer.model_store_dir.get()).resolve()
    if not store.is_relative_to(Path(home).resolve()):
        raise RuntimeError(
            f"BentoML already uses the store {store}, outside BENTOML_HOME={home}. "
            "Set BENTOML_HOME before the process first touches the BentoML store."
        )
