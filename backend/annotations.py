"""Labeled tasks from Label Studio: fetched with its SDK, one label per task."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable

from backend.label_config import ClassificationTarget

logger = logging.getLogger(__name__)

_ANNOTATED_FILTER = {
    "filters": {
        "conjunction": "and",
        "items": [
            {
                "filter": "filter:tasks:total_annotations",
                "operator": "greater",
                "type": "Number",
                "value": 0,
            }
        ],
    }
}


@dataclasses.dataclass(frozen=True)
class LabeledTask:
    """One task with the label its annotations give it.

    :param task_id: the Label Studio task id.
    :param image: the task's image reference (its data under the Image's key).
    :param label: the chosen ``Choice`` value.
    """

    task_id: int
    image: str
    label: str


def _as_dict(item) -> dict:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        return item.model_dump()
    return dict(item)


def _choice(annotation: dict, target: ClassificationTarget) -> str | None:
    if annotation.get("was_cancelled") or annotation.get("skipped"):
        return None
    for region in annotation.get("result") or ():
        if not isinstance(region, dict):
            continue
        if region.get("from_name") != target.from_name:
            continue
        choices = (region.get("value") or {}).get("choices") or ()
        if choices and choices[0] in target.labels:
            return choices[0]
    return None


def _recency(annotation: dict) -> tuple:
    return (
        str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        int(annotation.get("id") or 0),
    )


def label_of(task: dict, target: ClassificationTarget) -> str | None:
    """The label a task's annotations give it, or None.

    Skipped, cancelled and empty annotations are ignored; a ground-truth
    annotation wins, otherwise the newest one does.
    """
    usable = []
    for raw in task.get("annotations") or ():
        annotation = _as_dict(raw)
        label = _choice(annotation, target)
        if label is not None:
            usable.append(
                (bool(annotation.get("ground_truth")), _recency(annotation), label)
            )
    if not usable:
        return None
    return max(usable, key=lambda entry: (entry[0], entry[1]))[2]


def labeled_tasks(
    tasks: Iterable[dict], target: ClassificationTarget
) -> list[LabeledTask]:
    """Keep the tasks that have an image and a usable label."""
    found = []
    for raw in tasks:
        task = _as_dict(raw)
        image = (task.get("data") or {}).get(target.data_key)
        label = label_of(task, target)
        if isinstance(image, str) and image and label is not None:
            found.append(LabeledTask(int(task["id"]), image, label))
    return found


def project_id_of(data: dict) -> int | None:
    """The project id a webhook payload is about, wherever it carries it.

    Looks at ``project.id``, ``project`` (a number), ``annotation.project`` and
    ``task.project``, in that order.
    """
    candidates = []
    project = data.get("project")
    if isinstance(project, dict):
        candidates.append(project.get("id"))
    else:
        candidates.append(project)
    for key in ("annotation", "task"):
        if isinstance(data.get(key), dict):
            candidates.append(data[key].get("project"))
    annotations = data.get("annotations")
    if (
        isinstance(annotations, list)
        and annotations
        and isinstance(annotations[0], dict)
    ):
        candidates.append(annotations[0].get("project"))
    for candidate in candidates:
        if isinstance(candidate, bool):
            continue
        if isinstance(candidate, int) and candidate > 0:
            return candidate
        if isinstance(candidate, str):
            head = candidate.split(".", 1)[0]
            if head.isdigit() and int(head) > 0:
                return int(head)
    return None


class LabelStudioProject:
    """Reads one project through ``label-studio-sdk``.

    :param url: Label Studio's base URL.
    :param token: a legacy token or a Personal Access Token.
    :param project_id: the project.
    """

    def __init__(self, url: str, token: str, project_id: int) -> None:
        from label_studio_sdk import LabelStudio

        self.project_id = project_id
        self._client = LabelStudio(base_url=url, api_key=token, timeout=30)

    def label_config(self) -> str:
        """The project's current labeling config."""
        return self._client.projects.get(id=self.project_id).label_config

    def annotated_tasks(self) -> list[dict]:
        """Every task of the project that has at least one annotation.

        Label Studio 1.23 ignores the tasks API's ``only_annotated``, so the
        Data Manager filter on the annotation count does the selecting; should
        a Label Studio refuse that filter, every task is fetched instead (the
        caller keeps only labeled ones either way).
        """
        from label_studio_sdk.core.api_error import ApiError

        try:
            return self._tasks(query=json.dumps(_ANNOTATED_FILTER))
        except ApiError as exc:
            logger.warning(
                "Label Studio refused the annotated-tasks filter (HTTP %s);"
                " fetching every task of project %d",
                exc.status_code,
                self.project_id,
            )
            return self._tasks()

    def _tasks(self, **filters) -> list[dict]:
        pager = self._client.tasks.list(
            project=self.project_id, fields="all", page_size=100, **filters
        )
        return [_as_dict(task) for task in pager]
