"""A confusion-matrix picture, drawn with Pillow, saved beside a version's metrics."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

_CELL = 36
_LABEL_WIDTH = 110


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = ""
) -> bytes:
    """Render a confusion matrix (rows: true class, columns: predicted) as PNG.

    :param matrix: square counts, in the order of ``classes``.
    :param classes: the class names.
    :param title: a line drawn above the matrix, such as the model tag.
    """
    count = len(classes)
    top = 40 + _LABEL_WIDTH
    width = _LABEL_WIDTH + count * _CELL + 20
    height = top + count * _CELL + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (10, 10),
        title or "confusion matrix (rows: true, columns: predicted)",
        fill="black",
    )
    for row_index, row in enumerate(matrix):
        total = max(1, sum(row))
        for column_index, value in enumerate(row):
            share = value / total
            x0 = _LABEL_WIDTH + column_index * _CELL
            y0 = top + row_index * _CELL
            shade = int(255 - 200 * share)
            fill = (
                (shade, shade, 255)
                if row_index == column_index
                else (255, shade, shade)
            )
            draw.rectangle(
                [x0, y0, x0 + _CELL - 1, y0 + _CELL - 1], fill=fill, outline="gray"
            )
            draw.text((x0 + 6, y0 + 12), str(value), fill="black")
    for index, name in enumerate(classes):
        draw.text((6, top + index * _CELL + 12), name[:16], fill="black")
        label = Image.new("RGB", (_LABEL_WIDTH - 10, 14), "white")
        ImageDraw.Draw(label).text((0, 0), name[:16], fill="black")
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (_LABEL_WIDTH + index * _CELL + 10, 40))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
