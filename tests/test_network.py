"""Tests of the classifier network recipe on real bundled images."""

from pathlib import Path

import bentoml
import keras
import numpy as np
import pytest
from PIL import Image

from backend import network

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "celestial-bodies"


def _images(label: str, start: int, stop: int) -> list[Path]:
    files = sorted(
        (DATA_DIR / label).glob("*.jpg"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    )
    return files[start:stop]


def _dataset(labels, start, stop, to_array=network.image_to_array):
    arrays, classes = [], []
    for index, label in enumerate(labels):
        for path in _images(label, start, stop):
            with Image.open(path) as image:
                arrays.append(to_array(image))
            classes.append(index)
    return np.stack(arrays), np.array(classes)


def _grayscale_32(image: Image.Image) -> np.ndarray:
    gray = image.convert("L").resize((32, 32), Image.Resampling.BILINEAR)
    return (np.asarray(gray, dtype=np.float32) / 255.0)[:, :, np.newaxis]


def _small_grayscale_parent(num_classes: int) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(8, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((3, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


def test_image_to_array_gives_rgb_floats_in_unit_range_for_any_mode():
    path = _images("Mars", 0, 1)[0]
    with Image.open(path) as image:
        rgb = network.image_to_array(image)
        gray = network.image_to_array(image.convert("L"))
        wide = network.image_to_array(image.convert("RGBA").resize((200, 90)))

    size = network.INPUT_SIZE
    for array in (rgb, gray, wide):
        assert array.shape == (size, size, 3)
        assert array.dtype == np.float32
        assert array.min() >= 0.0 and array.max() <= 1.0
    # Mars is red: the colour survives, and black space stays black.
    assert rgb[..., 0].mean() > rgb[..., 2].mean() + 0.05
    assert rgb[0, 0].max() < 0.05
    assert np.allclose(gray[..., 0], gray[..., 2])


def test_build_classifier_gives_one_unbounded_logit_per_class():
    model = network.build_classifier(7)
    batch = np.random.default_rng(0).random(
        (2, network.INPUT_SIZE, network.INPUT_SIZE, 3), dtype=np.float32
    )

    logits = np.asarray(model(batch))

    assert logits.shape == (2, 7)
    assert model.layers[-1].get_config()["activation"] == "linear"
    assert not np.allclose(logits.sum(axis=1), 1.0)


def test_build_classifier_refuses_a_single_class():
    with pytest.raises(ValueError, match="at least 2 classes"):
        network.build_classifier(1)


def test_train_from_scratch_recognises_unseen_images(bentoml_home):
    labels = ["Earth", "Moon", "Saturn"]
    x, y = _dataset(labels, 0, 15)
    x_unseen, y_unseen = _dataset(labels, 100, 120)

    model = network.train_from_scratch(x, y, len(labels), seed=1, epochs=40)
    scores = network.evaluate(model, x_unseen, y_unseen, len(labels))

    assert scores["count"] == 60
    assert scores["accuracy"] >= 0.85, scores
    saved = bentoml.keras.save_model("recipe_round_trip", model, include_optimizer=True)
    loaded = keras.models.load_model(saved.path)
    assert np.allclose(loaded.predict(x_unseen[:5], verbose=0), model(x_unseen[:5]))
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0


def test_train_from_scratch_explains_images_of_the_wrong_size():
    x = np.zeros((4, 32, 32, 1), dtype=np.float32)

    with pytest.raises(ValueError, match="image_to_array"):
        network.train_from_scratch(x, np.array([0, 1, 0, 1]), 2)


def test_remap_classes_keeps_known_classes_and_adds_new_ones():
    parent = _small_grayscale_parent(3)
    parent_weights = [w.copy() for w in parent.get_weights()]
    x, _ = _dataset(["Jupiter", "Venus"], 0, 3, to_array=_grayscale_32)

    child = network.remap_classes(parent, [2, None, 0, None])

    parent_logits = np.asarray(parent(x))
    child_logits = np.asarray(child(x))
    assert child.output_shape == (None, 4)
    assert np.allclose(child_logits[:, 0], parent_logits[:, 2], atol=1e-5)
    assert np.allclose(child_logits[:, 2], parent_logits[:, 0], atol=1e-5)
    kernel = child.layers[-1].get_weights()[0]
    assert np.abs(kernel[:, 1]).max() > 0 and np.abs(kernel[:, 3]).max() > 0
    assert all(
        np.array_equal(before, after)
        for before, after in zip(parent_weights, parent.get_weights())
    )


def test_remap_classes_refuses_a_parent_that_outputs_probabilities():
    parent = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]
    )

    with pytest.raises(ValueError, match="train_from_scratch"):
        network.remap_classes(parent, [0, 1, 2])


def test_fine_tune_learns_a_class_the_parent_never_saw():
    parent_labels = ["Earth", "Saturn"]
    labels = ["Saturn", "Earth", "Uranus"]
    x_parent, y_parent = _dataset(parent_labels, 0, 10, to_array=_grayscale_32)
    keras.utils.set_random_seed(0)
    parent = _small_grayscale_parent(len(parent_labels))
    parent.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    parent.fit(x_parent, y_parent, epochs=5, verbose=0)
    x, y = _dataset(labels, 10, 25, to_array=_grayscale_32)
    x_unseen, y_unseen = _dataset(labels, 100, 115, to_array=_grayscale_32)

    child = network.fine_tune(parent, x, y, len(labels), [1, 0, None], epochs=40)
    scores = network.evaluate(child, x_unseen, y_unseen, len(labels))

    assert child.output_shape == (None, 3)
    assert parent.output_shape == (None, 2)
    assert scores["recall"][2] >= 0.8, scores
    assert scores["accuracy"] >= 0.8, scores


def test_evaluate_counts_true_classes_against_predicted_ones():
    logits = np.array(
        [
            [3.0, 0.0, 0.0],
            [0.0, 2.0, 1.0],
            [0.0, 2.0, 5.0],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 9.0],
        ],
        dtype=np.float32,
    )
    y = np.array([0, 1, 1, 2, 2])
    passthrough = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])

    scores = network.evaluate(passthrough, logits, y, 3)

    assert scores["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx([1.0, 0.5, 0.5])


def test_scores_from_logits_leaves_recall_open_for_a_class_without_images():
    scores = network.scores_from_logits(np.eye(3)[[0, 0, 1]], np.array([0, 0, 1]), 3)

    assert scores["recall"] == [1.0, 1.0, None]
    assert scores["confusion_matrix"][2] == [0, 0, 0]
