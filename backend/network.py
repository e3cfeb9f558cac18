"""The image classifier network: its input format, training recipes and scores."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from backend.custom_objects import make_preprocess

logger = logging.getLogger(__name__)

INPUT_SIZE = 48
"""Width and height in pixels of the square images the classifier takes."""

INPUT_CHANNELS = 3
"""Colour channels of the input, in RGB order."""

INPUT_DTYPE = np.float32
"""Data type of the input; values lie in [0, 1]."""

BATCH_SIZE = 32
"""Images per training step."""

PEAK_LEARNING_RATE = 3e-3
"""Adam's learning rate at the first step of training from scratch."""

FINE_TUNE_LEARNING_RATE = 4e-3
"""Adam's learning rate at the first step of fine-tuning. Higher than from
scratch: the guide's network was trained little, at 1e-4, and gains most from
large steps, while a well trained parent measured no worse for them."""

FINAL_LEARNING_RATE_FRACTION = 0.05
"""The cosine decay ends at this fraction of the first learning rate."""

MIN_TRAINING_STEPS = 600
"""Default training length in steps; small data sets need many passes."""

MIN_EPOCHS = 15
"""Default training length in passes over the data, when that is longer."""

# The same transform is saved with every model as its ``preprocess``.
_PREPROCESS = make_preprocess(INPUT_SIZE, INPUT_CHANNELS)


def image_to_array(image: Image.Image) -> np.ndarray:
    """Turn a PIL image into one input of the classifier.

    The image is converted to RGB and resized to ``INPUT_SIZE`` x ``INPUT_SIZE``
    with bilinear resampling, whatever its aspect ratio. Only numpy and PIL are
    used, so the function can be pickled into a saved model and called in a
    process that has not imported Keras.

    Args:
        image: any image PIL can convert to RGB.

    Returns:
        A float32 array of shape ``(INPUT_SIZE, INPUT_SIZE, 3)`` with values in
        [0, 1]. Stack several with ``np.stack`` to make a batch.
    """
    return _PREPROCESS(image)[0]


def build_classifier(num_classes: int) -> keras.Model:
    """Build the untrained classifier network; it outputs logits.

    One convolution block and a small dense head: enough for renders of
    planets told apart by colour and texture, and fast on a CPU.

    Args:
        num_classes: number of classes, at least 2.

    Returns:
        A ``keras.Sequential`` taking batches of shape
        ``(N, INPUT_SIZE, INPUT_SIZE, 3)`` and giving logits of shape
        ``(N, num_classes)``.
    """
    if num_classes < 2:
        raise ValueError(
            f"A classifier needs at least 2 classes, received num_classes="
            f"{num_classes}; add more choices to the labeling config."
        )
    return keras.Sequential(
        [
            keras.Input((INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((3, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="image_classifier",
    )


def train_from_scratch(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    epochs: int | None = None,
) -> keras.Model:
    """Train a new classifier on labelled images.

    Each batch is randomly mirrored and rotated by any angle (the images are
    renders seen from random camera angles on a black background). Adam's
    learning rate starts at ``PEAK_LEARNING_RATE`` and follows a cosine decay
    to 5 % of it over the whole run.

    Args:
        x: images in the classifier's format, shape
            ``(N, INPUT_SIZE, INPUT_SIZE, 3)``, float32 in [0, 1] (see
            :func:`image_to_array`).
        y: class index of each image, integers in ``[0, num_classes)``.
        num_classes: number of outputs of the network.
        seed: seed of the weights, shuffling and augmentation; the same seed
            and data give the same model on the same machine. Defaults to 0.
        epochs: passes over the data. Defaults to ``None``: as many as needed
            for at least ``MIN_TRAINING_STEPS`` batches and ``MIN_EPOCHS``
            passes, which suits 10 to a few thousand images.

    Returns:
        The trained model, compiled with its optimizer, giving logits. It can
        be saved with ``bentoml.keras.save_model(..., include_optimizer=True)``.

    Example:
        >>> model = train_from_scratch(x, y, num_classes=10)
        >>> evaluate(model, x_test, y_test, 10)["accuracy"]
    """
    x = _check_images(x, (INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS))
    y = _check_labels(y, len(x), num_classes)
    keras.utils.set_random_seed(seed)
    model = build_classifier(num_classes)
    steps = _training_steps(len(x), epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        PEAK_LEARNING_RATE, decay_steps=steps, alpha=FINAL_LEARNING_RATE_FRACTION
    )
    _fit(model, x, y, schedule, steps, seed)
    return model


def fine_tune(
    parent: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    class_map: Sequence[int | None],
    *,
    seed: int = 0,
    epochs: int | None = None,
) -> keras.Model:
    """Continue training a served network on new labels.

    The parent is copied, never changed. Its last layer, a ``Dense`` layer that
    gives logits, is replaced by one with ``num_classes`` outputs: the weights
    of classes the parent knew are carried over, classes it did not know start
    from fresh weights, and parent classes missing from ``class_map`` are
    dropped. Then every layer is trained with the augmentation and schedule of
    :func:`train_from_scratch`, starting at ``FINE_TUNE_LEARNING_RATE``.

    Args:
        parent: a Sequential or functional model whose last layer is a
            ``Dense`` layer without activation.
        x: images already in the parent's own input format (for example
            grayscale 32 x 32 x 1), prepared by the caller.
        y: class index of each image in the new numbering, integers in
            ``[0, num_classes)``.
        num_classes: number of classes of the new model.
        class_map: for each new class ``i``, the index of the same class in
            the parent's outputs, or ``None`` when the class is new.
        seed: as in :func:`train_from_scratch`. Defaults to 0.
        epochs: as in :func:`train_from_scratch`. Defaults to ``None``.

    Returns:
        The new model, compiled with its optimizer, giving logits.

    Example:
        >>> # parent knows ["Mars", "Moon"]; the project has ["Moon", "Venus"]
        >>> child = fine_tune(parent, x, y, 2, class_map=[1, None])
    """
    if len(class_map) != num_classes:
        raise ValueError(
            f"class_map has {len(class_map)} entries for num_classes={num_classes}; "
            "give one entry (a parent output index or None) per new class."
        )
    _logits_layer(parent)
    x = _check_images(x, tuple(parent.inputs[0].shape[1:]))
    y = _check_labels(y, len(x), num_classes)
    # Seeded before the copy so that the weights of new classes are reproducible.
    keras.utils.set_random_seed(seed)
    model = remap_classes(parent, class_map)
    steps = _training_steps(len(x), epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        FINE_TUNE_LEARNING_RATE, decay_steps=steps, alpha=FINAL_LEARNING_RATE_FRACTION
    )
    _fit(model, x, y, schedule, steps, seed)
    return model


def remap_classes(parent: keras.Model, class_map: Sequence[int | None]) -> keras.Model:
    """Copy a network with its output layer rebuilt for another list of classes.

    The copy has one output per entry of ``class_map``. Output ``i`` takes the
    weights of the parent's output ``class_map[i]``, so it gives exactly the
    parent's logit for that class; an entry ``None`` gets freshly initialised
    weights. Parent outputs missing from ``class_map`` are dropped. The parent
    itself is left unchanged.

    Args:
        parent: a Sequential or functional model whose last layer is a
            ``Dense`` layer without activation.
        class_map: for each class of the copy, the index of the same class in
            the parent's outputs, or ``None`` when the class is new.

    Returns:
        An uncompiled functional model with the parent's inputs.

    Example:
        >>> # parent outputs ["Mars", "Moon"]; the copy ["Moon", "Venus", "Mars"]
        >>> child = remap_classes(parent, [1, None, 0])
    """
    head = _logits_layer(parent)
    known = [index for index in class_map if index is not None]
    if not class_map:
        raise ValueError("class_map is empty; give one entry per class of the copy.")
    if any(not 0 <= index < head.units for index in known):
        raise ValueError(
            f"class_map={list(class_map)} points outside the parent's {head.units} "
            f"outputs; use indices from 0 to {head.units - 1}, or None for a new "
            "class."
        )
    if len(set(known)) != len(known):
        raise ValueError(
            f"class_map={list(class_map)} maps two classes to the same parent "
            "output; each parent output may be used once."
        )

    body = keras.models.clone_model(parent)
    body.set_weights(parent.get_weights())
    old_head = body.layers[-1]
    new_head = keras.layers.Dense(len(class_map), name=old_head.name)
    # A single input goes in bare, as the parent is called, not in a list.
    inputs = body.inputs[0] if len(body.inputs) == 1 else body.inputs
    model = keras.Model(inputs, new_head(old_head.input), name=parent.name)

    kernel, bias = (np.array(weights) for weights in new_head.get_weights())
    old_kernel, old_bias = head.get_weights()
    for new_index, old_index in enumerate(class_map):
        if old_index is not None:
            kernel[:, new_index] = old_kernel[:, old_index]
            bias[new_index] = old_bias[old_index]
    new_head.set_weights([kernel, bias])
    return model


def evaluate(
    model: keras.Model, x: np.ndarray, y: np.ndarray, num_classes: int
) -> dict:
    """Score a classifier on labelled images.

    Args:
        model: a model giving logits (or any per-class scores: only the
            highest one counts).
        x: images in the model's input format.
        y: true class index of each image.
        num_classes: number of classes of the model.

    Returns:
        ``{"count", "accuracy", "recall", "confusion_matrix"}``: the number of
        images, the fraction predicted right, per class the fraction of its
        images predicted right (``None`` for a class without images), and the
        counts of true class (rows) against predicted class (columns).
    """
    if len(x) == 0:
        raise ValueError("evaluate needs at least one image; pass a non-empty x.")
    logits = np.asarray(model.predict(x, batch_size=256, verbose=0))
    return scores_from_logits(logits, y, num_classes)


def scores_from_logits(logits: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    """Compute the scores of :func:`evaluate` from logits already at hand.

    Args:
        logits: array of shape ``(N, num_classes)``.
        y: true class index of each row.
        num_classes: number of classes.

    Returns:
        The same dictionary as :func:`evaluate`.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(
            f"logits have shape {logits.shape}; expected (N, {num_classes}), one "
            "row of class scores per image."
        )
    if len(logits) == 0:
        raise ValueError("No logits to score; pass at least one row.")
    return scores_from_predictions(np.argmax(logits, axis=1), y, num_classes)


def scores_from_predictions(
    predicted: np.ndarray, y: np.ndarray, num_classes: int
) -> dict:
    """Compute the scores of :func:`evaluate` from predicted class indices.

    Args:
        predicted: the predicted class index of each image; -1 stands for a
            class outside ``[0, num_classes)`` and always counts as wrong.
        y: true class index of each image.
        num_classes: number of classes.

    Returns:
        The same dictionary as :func:`evaluate`.
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    if len(predicted) == 0:
        raise ValueError("No predictions to score; pass at least one.")
    y = _check_labels(y, len(predicted), num_classes)
    inside = predicted >= 0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y[inside], predicted[inside]), 1)
    per_class = np.bincount(y, minlength=num_classes)
    recall = [
        float(confusion[i, i] / per_class[i]) if per_class[i] else None
        for i in range(num_classes)
    ]
    return {
        "count": int(len(y)),
        "accuracy": float(np.trace(confusion) / len(y)),
        "recall": recall,
        "confusion_matrix": confusion.tolist(),
    }


def _training_steps(count: int, epochs: int | None) -> int:
    steps_per_epoch = math.ceil(count / BATCH_SIZE)
    if epochs is None:
        return max(MIN_TRAINING_STEPS, MIN_EPOCHS * steps_per_epoch)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, received epochs={epochs}.")
    return epochs * steps_per_epoch


def _fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    steps: int,
    seed: int,
) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    missing = sorted(set(range(model.output_shape[-1])) - set(y.tolist()))
    if missing:
        logger.warning(
            "No training images for class indices %s; the model will hardly ever "
            "predict them. Label some images of every class.",
            missing,
        )
    batches = _augmented_batches(x, y, seed)
    # Keras restarts its per-epoch machinery every epoch, which costs more than
    # the training itself on a few hundred images: run a repeating stream in a
    # few long chunks instead of many short epochs.
    chunk_steps = math.ceil(steps / 10)
    started = time.monotonic()
    history = model.fit(
        batches,
        epochs=math.ceil(steps / chunk_steps),
        steps_per_epoch=chunk_steps,
        shuffle=False,
        verbose=0,
    )
    logger.info(
        "Trained %s on %d images for %d steps in %.1f s (loss %.3f, accuracy %.3f)",
        model.name,
        len(x),
        steps,
        time.monotonic() - started,
        history.history["loss"][-1],
        history.history["accuracy"][-1],
    )


def _augmented_batches(x: np.ndarray, y: np.ndarray, seed: int) -> tf.data.Dataset:
    images = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    images = images.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    batches = images.repeat().batch(BATCH_SIZE)
    batch_seeds = tf.data.Dataset.counter().map(
        lambda index: tf.stack([tf.constant(seed, tf.int64), index])
    )
    return (
        tf.data.Dataset.zip((batches, batch_seeds))
        .map(_mirror_and_rotate, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )


def _mirror_and_rotate(
    batch: tuple[tf.Tensor, tf.Tensor], seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    # Stateless random ops keyed by the batch number keep the augmentation
    # reproducible although batches are prepared in parallel.
    images, labels = batch
    count = tf.shape(images)[0]
    flip_seed, angle_seed = tf.unstack(tf.random.experimental.stateless_split(seed))
    mirror = tf.random.stateless_uniform([count], flip_seed) < 0.5
    images = tf.where(mirror[:, None, None, None], tf.reverse(images, [2]), images)
    angle = tf.random.stateless_uniform(
        [count], angle_seed, minval=-math.pi, maxval=math.pi
    )
    height = tf.cast(tf.shape(images)[1], tf.float32) - 1.0
    width = tf.cast(tf.shape(images)[2], tf.float32) - 1.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Rotation about the image centre, as a map from output to input pixels.
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    zeros = tf.zeros_like(angle)
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], 1)
    images = keras.ops.image.affine_transform(
        images, transform, interpolation="bilinear", fill_mode="constant"
    )
    return images, labels


def _logits_layer(model: keras.Model) -> keras.layers.Dense:
    last = model.layers[-1] if model.layers else None
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(
            f"The last layer of {model.name!r} is {type(last).__name__}, not Dense; "
            "fine_tune needs a network ending in a Dense layer that outputs "
            "logits. Train a new model with train_from_scratch instead."
        )
    if last.get_config().get("activation") != "linear":
        raise ValueError(
            f"The last layer of {model.name!r} applies "
            f"activation={last.get_config().get('activation')!r}, so it outputs no "
            "logits; fine_tune needs a last Dense layer without activation. Train "
            "a new model with train_from_scratch instead."
        )
    if len(model.outputs) != 1:
        raise ValueError(
            f"{model.name!r} has {len(model.outputs)} outputs; fine_tune needs a "
            "network with a single logits output."
        )
    return last


def _check_images(x: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    expected = tuple(shape)
    matches = x.ndim == len(expected) + 1 and all(
        want is None or want == got for want, got in zip(expected, x.shape[1:])
    )
    if not matches:
        raise ValueError(
            f"Images have shape {x.shape}; the network takes (N, "
            f"{', '.join(str(d) for d in expected)}). Prepare each image with the "
            "model's own preprocessing (image_to_array for a new classifier)."
        )
    if len(x) == 0:
        raise ValueError("No images to train on; label some tasks first.")
    return x


def _check_labels(y: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"Labels have shape {y.shape} and dtype {y.dtype}; expected {count} "
            "integer class indices, one per image."
        )
    if count and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Labels range from {y.min()} to {y.max()}; class indices must lie in "
            f"[0, {num_classes})."
        )
    return y
