"""Folder-per-class image data sets and stratified hold-out splits."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def folder_dataset(root: Path) -> list[tuple[Path, str]]:
    """Every image under ``root/<class>/``, labeled with its folder name.

    :raises FileNotFoundError: when ``root`` is not a folder of class folders
        with images; the message says what layout is expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder. Pass a folder with one sub-folder of images"
            " per class, such as data/celestial-bodies."
        )
    items = [
        (path, folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise FileNotFoundError(
            f"{root} has no images in class folders; lay it out as"
            f" {root}/<class>/<image>.jpg."
        )
    return items


def stratified_split(
    labels: Sequence[str], holdout: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split indices into training and held-out parts, class by class.

    Each class with at least two examples puts ``round(n * holdout)`` of them
    (at least one) into the held-out part.

    :param labels: the label of each example.
    :param holdout: the held-out fraction, between 0 and 1.
    :param seed: makes the split repeatable.
    """
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    rng = random.Random(seed)
    train, held_out = [], []
    for label in sorted(by_class):
        indices = by_class[label][:]
        rng.shuffle(indices)
        count = max(1, round(len(indices) * holdout)) if len(indices) >= 2 else 0
        held_out.extend(indices[:count])
        train.extend(indices[count:])
    return sorted(train), sorted(held_out)
