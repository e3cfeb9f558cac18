"""Turning Label Studio tasks into predictions, one item per task, in order."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from backend.images import ImageError, ImageLoader
from backend.inference import LoadedModel
from backend.label_config import ClassificationTarget

logger = logging.getLogger(__name__)


def _image_reference(task: object, data_key: str) -> tuple[str, int | None]:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise ImageError("the task has no 'data' object")
    reference = task["data"].get(data_key)
    if not isinstance(reference, str) or not reference:
        keys = ", ".join(sorted(task["data"])) or "none"
        raise ImageError(
            f"the task's data has no image URL under {data_key!r} (it has: {keys});"
            f" the labeling config's Image reads ${data_key}"
        )
    task_id = task.get("id")
    return reference, task_id if isinstance(task_id, int) else None


def _unmatched_warning(model: LoadedModel, target: ClassificationTarget) -> str:
    return (
        f"None of the model's classes ({', '.join(model.classes)}) is a Choice of"
        f" '{target.from_name}' ({', '.join(target.labels)}). Add"
        f' <Choice value="{model.classes[0]}"/> (and the other classes) to the'
        " labeling config, or serve a model trained on these labels."
    )


def predict_tasks(
    tasks: Sequence[object],
    target: ClassificationTarget,
    model: LoadedModel,
    loader: ImageLoader,
    batch_size: int = 64,
) -> list[dict]:
    """Predict a Choices label for every task.

    The answer has one item per task, in the order of ``tasks``, because
    Label Studio drops every prediction of a request whose count differs. A
    task whose image cannot be read gets an item without ``result`` (Label
    Studio skips it) and the reason is logged; the other tasks are predicted.

    :param tasks: the tasks as Label Studio sends them.
    :param target: the project's Choices and Image.
    :param model: the model version to use.
    :param loader: fetches the images.
    :param batch_size: images per forward pass.
    """
    mapping = target.map_classes(model.classes)
    if not mapping:
        logger.warning(_unmatched_warning(model, target))
        return [
            {"error": "the model's classes match no Choice of the labeling config"}
            for _ in tasks
        ]
    items: list[dict | None] = [None] * len(tasks)
    references, positions = [], []
    for position, task in enumerate(tasks):
        try:
            references.append(_image_reference(task, target.data_key))
            positions.append(position)
        except ImageError as exc:
            items[position] = _failed(task, exc)
    loaded = loader.load_many(references)
    images, image_positions = [], []
    for position, image in zip(positions, loaded):
        if isinstance(image, ImageError):
            items[position] = _failed(tasks[position], image)
        else:
            images.append(image)
            image_positions.append(position)
    for position, scores in zip(image_positions, _classify(model, images, batch_size)):
        items[position] = _prediction(scores, mapping, target, model.tag)
    return items


def _classify(model: LoadedModel, images, batch_size):
    """Classify all images; when a batch fails, fall back to one by one."""
    results = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        try:
            results.extend(model.classify(chunk, batch_size))
        except Exception:
            logger.exception(
                "A batch of %d images failed; retrying one by one", len(chunk)
            )
            for image in chunk:
                try:
                    results.extend(model.classify([image]))
                except Exception as exc:
                    logger.warning("An image could not be classified: %s", exc)
                    results.append(None)
    return results


def _failed(task: object, error: Exception) -> dict:
    task_id = task.get("id") if isinstance(task, dict) else None
    logger.warning("No prediction for task %s: %s", task_id, error)
    return {"error": str(error)}


def _prediction(scores, mapping, target, model_version) -> dict:
    if scores is None:
        return {"error": "the model could not classify this image"}
    allowed = {name: p for name, p in scores.probabilities.items() if name in mapping}
    best = max(allowed, key=allowed.get)
    score = round(float(allowed[best]), 6)
    return {
        "result": [
            {
                "from_name": target.from_name,
                "to_name": target.to_name,
                "type": "choices",
                "value": {"choices": [mapping[best]]},
                "score": score,
            }
        ],
        "score": score,
        "model_version": model_version,
    }
