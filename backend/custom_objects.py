"""The ``preprocess`` and ``postprocess`` saved with every model this backend trains.

They follow the guide's contract, so its BentoML service can load a retrained
version with ``bentoml.keras.get(tag).custom_objects``: ``preprocess`` takes a
Pillow image and returns a float32 batch of one; ``postprocess`` takes logits
and returns ``{"prediction": label, "probabilities": {label: p}}`` for the first
row. They are pickled by value and use only NumPy and Pillow, so loading them
needs neither this package nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def make_preprocess(size: int, channels: int = 3) -> Callable:
    """Build ``preprocess(image) -> float32 array of shape (1, size, size, channels)``.

    :param size: the square input size of the network, in pixels.
    :param channels: 3 for RGB input, 1 for grayscale.
    """
    mode = "RGB" if channels == 3 else "L"

    def preprocess(image):
        import numpy
        from PIL import Image

        resized = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        pixels = numpy.asarray(resized, dtype=numpy.float32) / 255.0
        return pixels.reshape(1, size, size, channels)

    return preprocess


def make_postprocess(classes: Sequence[str]) -> Callable:
    """Build ``postprocess(logits) -> {"prediction", "probabilities"}``.

    :param classes: the class names in the order of the network's outputs.
    """
    names = tuple(classes)

    def postprocess(logits):
        import numpy

        row = numpy.asarray(logits, dtype=numpy.float64).reshape(-1, len(names))[0]
        exp = numpy.exp(row - row.max())
        probabilities = exp / exp.sum()
        return {
            "prediction": names[int(probabilities.argmax())],
            "probabilities": dict(zip(names, map(float, probabilities))),
        }

    return postprocess
