"""One label per task from its annotations, and the project of a webhook."""

import pytest

from backend.annotations import label_of, labeled_tasks, project_id_of
from backend.label_config import parse_label_config

TARGET = parse_label_config(
    '<View><Image name="image" value="$image"/><Choices name="choice" toName="image">'
    '<Choice value="Earth"/><Choice value="Mars"/></Choices></View>'
)


def annotation(choice, **extra):
    result = [
        {
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [choice]},
        }
    ]
    return {"result": result, **extra}


def test_newest_annotation_wins():
    task = {
        "annotations": [
            annotation("Earth", id=1, updated_at="2026-01-01T00:00:00Z"),
            annotation("Mars", id=2, updated_at="2026-02-01T00:00:00Z"),
        ]
    }
    assert label_of(task, TARGET) == "Mars"


def test_ground_truth_wins_over_newer():
    task = {
        "annotations": [
            annotation("Earth", id=1, ground_truth=True, updated_at="2026-01-01"),
            annotation("Mars", id=2, updated_at="2026-02-01"),
        ]
    }
    assert label_of(task, TARGET) == "Earth"


def test_skipped_cancelled_empty_and_unknown_labels_are_ignored():
    task = {
        "annotations": [
            annotation("Earth", id=5, was_cancelled=True),
            {"id": 6, "result": []},
            annotation("Pluto", id=7),
            annotation("Mars", id=1),
        ]
    }
    assert label_of(task, TARGET) == "Mars"
    assert label_of({"annotations": [{"id": 1, "result": []}]}, TARGET) is None


def test_labeled_tasks_keep_only_tasks_with_image_and_label():
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/upload/1/a.jpg"},
            "annotations": [annotation("Earth")],
        },
        {"id": 2, "data": {"image": "/data/upload/1/b.jpg"}, "annotations": []},
        {"id": 3, "data": {}, "annotations": [annotation("Mars")]},
    ]
    found = labeled_tasks(tasks, TARGET)
    assert [(t.task_id, t.label) for t in found] == [(1, "Earth")]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"project": {"id": 7, "title": "x"}}, 7),
        ({"project": 8}, 8),
        ({"project": "9.1700000000"}, 9),
        ({"annotation": {"project": 10}}, 10),
        ({"task": {"project": 11}}, 11),
        ({"annotation": {"id": 1}}, None),
        ({"project": True}, None),
        ({}, None),
    ],
)
def test_project_id_is_found_wherever_the_payload_carries_it(payload, expected):
    assert project_id_of(payload) == expected
