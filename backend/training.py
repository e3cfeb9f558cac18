"""Training runs: candidates from labels, a held-out comparison, a saved version."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from backend import store
from backend.custom_objects import make_postprocess, make_preprocess
from backend.dataset import folder_dataset, stratified_split
from backend.images import ImageError
from backend.inference import LoadedModel
from backend.report import confusion_matrix_png

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run that cannot produce a model; the message says what is missing."""


@dataclasses.dataclass
class Candidate:
    """A trained network waiting for its held-out verdict."""

    kind: str
    network: object
    preprocess: Callable
    metrics: dict


def _metrics(true: Sequence[int], predicted: Sequence[int], classes: Sequence[str]):
    """Accuracy, per-class recall and confusion matrix (rows: true class).

    A predicted index of -1 (a class outside ``classes``) counts as wrong.
    """
    from backend.network import scores_from_predictions

    scores = scores_from_predictions(
        np.asarray(predicted), np.asarray(true), len(classes)
    )
    return {
        "accuracy": round(scores["accuracy"], 4),
        "per_class_recall": {
            name: None if recall is None else round(recall, 4)
            for name, recall in zip(classes, scores["recall"])
        },
        "confusion_matrix": scores["confusion_matrix"],
        "count": scores["count"],
    }


def _batch(images: Sequence[Image.Image], preprocess: Callable) -> np.ndarray:
    return np.concatenate([np.asarray(preprocess(im), np.float32) for im in images])


def _predict_indices(network, batch: np.ndarray) -> np.ndarray:
    logits = np.asarray(network.predict(batch, batch_size=256, verbose=0))
    return logits.argmax(axis=1)


def evaluate_served(
    model: LoadedModel,
    images,
    labels: Sequence[int],
    classes: Sequence[str],
    class_of_model_class: dict[str, str],
) -> dict:
    """Held-out metrics of a served model, its classes mapped to the run's."""
    scores = model.classify(images)
    index = {name: i for i, name in enumerate(classes)}
    predicted = [
        index.get(class_of_model_class.get(score.label, ""), -1) for score in scores
    ]
    return _metrics(labels, predicted, classes)


def train_candidates(
    train_images,
    train_y,
    test_images,
    test_y,
    classes: Sequence[str],
    parent: LoadedModel | None,
    class_of_model_class: dict[str, str],
    seed: int = 0,
) -> list[Candidate]:
    """Train a network from scratch and, when possible, fine-tune the parent."""
    from backend import network as recipe

    candidates = []
    started = time.monotonic()
    preprocess = make_preprocess(recipe.INPUT_SIZE, 3)
    x = _batch(train_images, preprocess)
    scratch = recipe.train_from_scratch(x, np.asarray(train_y), len(classes), seed=seed)
    predicted = _predict_indices(scratch, _batch(test_images, preprocess))
    metrics = _metrics(test_y, list(predicted), classes)
    metrics["seconds"] = round(time.monotonic() - started, 1)
    candidates.append(Candidate("scratch", scratch, preprocess, metrics))
    logger.info(
        "Candidate 'scratch': held-out accuracy %.3f (%.1f s)",
        metrics["accuracy"],
        metrics["seconds"],
    )
    if parent is not None:
        started = time.monotonic()
        position = {name: i for i, name in enumerate(parent.classes)}
        by_run_class = {run: model for model, run in class_of_model_class.items()}
        class_map = [position.get(by_run_class.get(name, "")) for name in classes]
        try:
            tuned = recipe.fine_tune(
                parent.network,
                _batch(train_images, parent.preprocess),
                np.asarray(train_y),
                len(classes),
                class_map,
                seed=seed,
            )
        except ValueError as exc:
            logger.info("Not fine-tuning %s: %s", parent.tag, exc)
        else:
            predicted = _predict_indices(tuned, _batch(test_images, parent.preprocess))
            metrics = _metrics(test_y, list(predicted), classes)
            metrics["seconds"] = round(time.monotonic() - started, 1)
            candidates.append(Candidate("fine-tune", tuned, parent.preprocess, metrics))
            logger.info(
                "Candidate 'fine-tune' of %s: held-out accuracy %.3f (%.1f s)",
                parent.tag,
                metrics["accuracy"],
                metrics["seconds"],
            )
    return candidates


def train_and_save(
    name: str,
    images: Sequence[Image.Image],
    labels: Sequence[str],
    *,
    classes: Sequence[str],
    holdout: float,
    seed: int = 0,
    parent: LoadedModel | None = None,
    class_of_model_class: dict[str, str] | None = None,
    extra_metadata: dict | None = None,
) -> tuple[store.ModelVersion, dict]:
    """Train candidates, compare them with the parent on held-out data, save one.

    The best candidate is saved as a new version of ``name`` whatever the
    verdict: ``promoted`` when it is not worse than the parent on the same
    held-out images (or there is no parent), else ``rejected``.

    :returns: the saved version and the run's summary.
    """
    started = time.monotonic()
    index = {label: i for i, label in enumerate(classes)}
    y = [index[label] for label in labels]
    train_idx, test_idx = stratified_split(labels, holdout, seed)
    if not test_idx:
        raise TrainingError("Too few labels to hold any out; label more tasks.")
    train_images = [images[i] for i in train_idx]
    test_images = [images[i] for i in test_idx]
    train_y = [y[i] for i in train_idx]
    test_y = [y[i] for i in test_idx]
    mapping = class_of_model_class or {}
    candidates = train_candidates(
        train_images, train_y, test_images, test_y, classes, parent, mapping, seed
    )
    best = max(candidates, key=lambda c: (c.metrics["accuracy"], c.kind == "scratch"))
    parent_metrics = (
        evaluate_served(parent, test_images, test_y, classes, mapping)
        if parent is not None
        else None
    )
    if parent_metrics is None or best.metrics["accuracy"] >= parent_metrics["accuracy"]:
        stage, reason = store.PROMOTED, "not worse than the served model on held-out"
    else:
        stage = store.REJECTED
        reason = (
            f"held-out accuracy {best.metrics['accuracy']:.3f} is below the served"
            f" model's {parent_metrics['accuracy']:.3f}"
        )
    duration = round(time.monotonic() - started, 1)
    metadata = {
        "classes": list(classes),
        "output": "logits",
        "parent": parent.tag if parent else None,
        "recipe": best.kind,
        "metrics": best.metrics,
        "parent_metrics": parent_metrics,
        "candidates": {c.kind: c.metrics["accuracy"] for c in candidates},
        "counts": {
            "train": len(train_idx),
            "held_out": len(test_idx),
            "per_class": dict(Counter(labels)),
        },
        "duration_seconds": duration,
        "stage_reason": reason,
        **(extra_metadata or {}),
    }
    picture = confusion_matrix_png(
        best.metrics["confusion_matrix"],
        classes,
        f"{name} ({best.kind}): held-out accuracy {best.metrics['accuracy']:.3f}",
    )
    version = store.save_version(
        name,
        best.network,
        custom_objects={
            "preprocess": best.preprocess,
            "postprocess": make_postprocess(classes),
        },
        external_modules=[],
        metadata=metadata,
        stage=stage,
        extra_files={store.CONFUSION_MATRIX_FILE: picture},
    )
    summary = {
        "status": "ok",
        "model_version": version.tag,
        "stage": stage,
        "reason": reason,
        "accuracy": best.metrics["accuracy"],
        "parent": metadata["parent"],
        "parent_accuracy": parent_metrics["accuracy"] if parent_metrics else None,
        "duration_seconds": duration,
    }
    if stage == store.PROMOTED:
        logger.info(
            "Model promoted: %s -> %s (held-out accuracy %.3f vs %s, %d labels,"
            " %.0f s)",
            metadata["parent"] or "(none)",
            version.tag,
            best.metrics["accuracy"],
            f"{parent_metrics['accuracy']:.3f}" if parent_metrics else "n/a",
            len(labels),
            duration,
        )
    else:
        logger.warning("Candidate %s rejected: %s", version.tag, reason)
    return version, summary


def load_folder(root: Path) -> tuple[list[Image.Image], list[str]]:
    """Decode every image of a folder-per-class data set."""
    images, labels = [], []
    for path, label in folder_dataset(root):
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
        labels.append(label)
    return images, labels


def train_folder(name: str, root: Path, *, holdout: float, seed: int = 0):
    """Train a first version of ``name`` from a folder-per-class data set."""
    images, labels = load_folder(root)
    classes = sorted(set(labels))
    logger.info(
        "Training %s on %d images of %d classes from %s",
        name,
        len(images),
        len(classes),
        root,
    )
    return train_and_save(
        name,
        images,
        labels,
        classes=classes,
        holdout=holdout,
        seed=seed,
        extra_metadata={"source": f"folder {Path(root).name}"},
    )


def train_project(service, data: dict, project: str = "") -> dict:
    """One training run for a Label Studio project (called from ``fit()``).

    Fetches the labeled tasks with label-studio-sdk, adds the optional extra
    data set, trains and saves a candidate, and promotes it when it is not
    worse than the served version. Problems end the run with a reason;
    nothing is promoted then.
    """
    from backend.annotations import LabelStudioProject, labeled_tasks, project_id_of

    settings = service.settings
    project_id = project_id_of(data) or project_id_of({"project": project})
    if project_id is None:
        raise TrainingError("The event names no project; nothing to train.")
    connection = service.connections.get()
    if not connection.configured:
        raise TrainingError(
            "Training needs Label Studio's address and a token: set LABEL_STUDIO_URL"
            " and LABEL_STUDIO_API_KEY, or connect the backend from Label Studio so"
            " /setup tells it."
        )
    started = time.monotonic()
    client = LabelStudioProject(connection.url, connection.token, project_id)
    target = service.target(client.label_config())
    fetched = client.annotated_tasks()
    tasks = labeled_tasks(fetched, target)
    logger.info(
        "Training started for project %d: %d labeled tasks (%d fetched)",
        project_id,
        len(tasks),
        len(fetched),
    )
    loaded = service.loader.load_many([(task.image, task.task_id) for task in tasks])
    images, labels = [], []
    unreadable = 0
    for task, image in zip(tasks, loaded):
        if isinstance(image, ImageError):
            unreadable += 1
            logger.warning("Leaving task %d out of training: %s", task.task_id, image)
            continue
        images.append(image.convert("RGB"))
        labels.append(task.label)
    if settings.train_extra_data_dir:
        extra_images, extra_labels = load_folder(settings.train_extra_data_dir)
        for image, label in zip(extra_images, extra_labels):
            match = target.map_classes([label]).get(label)
            if match:
                images.append(image)
                labels.append(match)
    counts = Counter(labels)
    classes = [
        label
        for label in target.labels
        if counts[label] >= settings.train_min_per_class
    ]
    too_few = {
        label: counts[label]
        for label in target.labels
        if 0 < counts[label] < settings.train_min_per_class
    }
    if too_few:
        logger.info(
            "Classes with fewer than %d labels are left out: %s",
            settings.train_min_per_class,
            too_few,
        )
    if len(classes) < 2:
        raise TrainingError(
            f"Training needs at least two classes with {settings.train_min_per_class}"
            f" or more labels each; project {project_id} has {dict(counts) or 'none'}."
            " Label more tasks, then press Start Training again."
        )
    keep = [i for i, label in enumerate(labels) if label in classes]
    images = [images[i] for i in keep]
    labels = [labels[i] for i in keep]
    try:
        parent = LoadedModel.load(store.resolve(settings.model_tag))
    except store.ModelNotFound:
        parent = None
    mapping = target.map_classes(parent.classes) if parent is not None else {}
    version, summary = train_and_save(
        settings.model_name,
        images,
        labels,
        classes=classes,
        holdout=settings.train_holdout,
        seed=settings.train_seed,
        parent=parent,
        class_of_model_class=mapping,
        extra_metadata={"project": project_id, "unreadable_images": unreadable},
    )
    summary["project"] = project_id
    summary["labels"] = len(labels)
    logger.info(
        "Training finished for project %d in %.0f s: %s is %s",
        project_id,
        time.monotonic() - started,
        version.tag,
        summary["stage"],
    )
    return summary
