"""Which webhooks start training, and how runs coalesce (real files, no model)."""

import threading
from types import SimpleNamespace

import pytest

from backend.errors import ClientError
from backend.jobs import FileState, TrainingJobManager
from backend.settings import load_settings


class RecordingManager(TrainingJobManager):
    """The real policy, with the launch of a training process recorded."""

    def __init__(self, service):
        super().__init__(service)
        self.launched = []

    def run_job(self, model_class, args):
        self.launched.append(args)


@pytest.fixture
def manager(tmp_path):
    settings = load_settings({"MODEL_DIR": str(tmp_path), "TRAIN_EVERY": "3"})
    service = SimpleNamespace(
        settings=settings,
        connections=SimpleNamespace(get=lambda: SimpleNamespace(url="", token="")),
        served=SimpleNamespace(current_tag=lambda: "m:1"),
    )
    return RecordingManager(service)


def test_start_training_always_starts_a_run(manager):
    answer = manager.submit("START_TRAINING", {"project": {"id": 4}})
    assert answer["status"] == "started"
    assert len(manager.launched) == 1
    event, data, _ = manager.launched[0]
    assert (event, data) == ("START_TRAINING", {"project": {"id": 4}})


def test_annotation_events_start_a_run_only_every_train_every_changes(manager):
    statuses = [
        manager.submit(event, {"annotation": {"project": 2}})["status"]
        for event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED")
    ]
    assert statuses == ["counted", "counted", "started"]
    assert len(manager.launched) == 1


def test_other_events_are_ignored_and_start_nothing(manager):
    for event in ("PROJECT_UPDATED", "TASKS_CREATED", "ANNOTATIONS_DELETED"):
        assert manager.submit(event, {"project": {"id": 1}})["status"] == "ignored"
    assert manager.launched == []


def test_a_training_event_without_a_project_is_a_client_error(manager):
    with pytest.raises(ClientError) as caught:
        manager.submit("START_TRAINING", {"annotation": {"id": 3}})
    assert caught.value.field == "project"
    assert caught.value.status == 400


def test_events_during_a_run_coalesce_into_one_follow_up(manager):
    state = manager.state
    with state.run_lock(5) as acquired:
        assert acquired
        answers = [manager.submit("START_TRAINING", {"project": 5}) for _ in range(3)]
        assert {a["status"] for a in answers} == {"coalesced"}
        assert manager.launched == []
    assert state.take_pending(5) is True
    assert state.take_pending(5) is False


def test_the_run_lock_is_exclusive_across_open_files(tmp_path):
    first, second = FileState(tmp_path), FileState(tmp_path)
    with first.run_lock(1) as held:
        assert held
        assert second.is_running(1)
        with second.run_lock(1) as also:
            assert not also
    assert not second.is_running(1)


def test_change_counter_is_safe_under_concurrent_webhooks(tmp_path):
    state = FileState(tmp_path)
    threads = [
        threading.Thread(target=lambda: [state.count_change(9) for _ in range(25)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.count_change(9) == 101


@pytest.fixture
def restore_service():
    from backend import service as service_module

    previous = service_module._current
    yield
    service_module._current = previous


def test_a_run_that_cannot_reach_label_studio_ends_with_a_reason_and_frees_the_project(
    tmp_path, restore_service
):
    from backend.jobs import execute

    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path),
            "MODEL_TAG": "never_saved_model:latest",
            "LABEL_STUDIO_URL": "http://127.0.0.1:9",
            "LABEL_STUDIO_API_KEY": "a" * 40,
        }
    )
    state = FileState(tmp_path / "training")
    state.set_pending(3)
    payload = {"event": "START_TRAINING", "data": {"project": {"id": 3}}, "job_id": "j"}
    results = execute(settings, payload)
    assert [result["status"] for result in results] == ["failed"]
    assert results[0]["reason"]
    assert state.last_result(3)["status"] == "failed"
    assert not state.is_running(3) and not state.has_pending(3)
