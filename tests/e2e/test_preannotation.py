"""A user's path: connect the backend in Label Studio and retrieve predictions."""

from __future__ import annotations

import os

import pytest

from tests.conftest import CLASSES, images_of

from .labelstudio import choices_label_config

pytestmark = pytest.mark.e2e

# Images from number 50 on were never seen by the guide-style model.
UNSEEN = [path for label in CLASSES for path in images_of(label, 60, 62)]


def _backend_env(label_studio, guide_model, tmp_path, token: str | None) -> dict:
    env = {
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        "MODEL_TAG": str(guide_model.tag),
        "MODEL_DIR": str(tmp_path / "model-dir"),
        "LOG_LEVEL": "INFO",
    }
    if token is not None:
        env["LABEL_STUDIO_URL"] = label_studio.url
        env["LABEL_STUDIO_API_KEY"] = token
    return env


def _assert_every_task_predicted(client, project_id, tag, labels):
    tasks = client.list_tasks(project_id, with_predictions=True)
    assert len(tasks) == len(UNSEEN)
    for task in tasks:
        predictions = client.list_predictions(task["id"])
        assert len(predictions) == 1, f"task {task['id']}: {predictions}"
        (prediction,) = predictions
        assert prediction["model_version"] == tag
        assert 0 < prediction["score"] <= 1
        (region,) = prediction["result"]
        assert region["from_name"] == "choice"
        assert region["to_name"] == "image"
        assert region["value"]["choices"][0] in labels


def _connect_and_predict(label_studio, client, backend, tag, make_project):
    project = make_project(label_config=choices_label_config(CLASSES))
    client.import_files(project["id"], UNSEEN)
    ml = client.connect_ml_backend(project["id"], backend.url, title="BentoML")
    ml = client.get_ml_backend(ml["id"])
    assert ml["state"] == "CO", ml
    assert ml["model_version"] == tag
    answer = client.retrieve_predictions(project["id"])
    assert answer["processed_items"] == len(UNSEEN)
    _assert_every_task_predicted(client, project["id"], tag, CLASSES)
    return project


def test_label_studio_ml_start_with_a_legacy_token_predicts_every_task(
    label_studio, backend_server, guide_model, make_project, tmp_path
):
    client = label_studio.client()
    env = _backend_env(label_studio, guide_model, tmp_path, label_studio.legacy_token)
    backend = backend_server("label-studio-ml", env=env)
    _connect_and_predict(
        label_studio, client, backend, str(guide_model.tag), make_project
    )


def test_gunicorn_with_a_personal_access_token_predicts_every_task(
    label_studio, backend_server, guide_model, make_project, tmp_path
):
    client = label_studio.client()
    token = label_studio.personal_access_token()
    env = _backend_env(label_studio, guide_model, tmp_path, token)
    backend = backend_server("gunicorn", env=env)
    _connect_and_predict(
        label_studio, client, backend, str(guide_model.tag), make_project
    )
    assert "Bearer" not in backend.log() and token not in backend.log()


def test_without_settings_the_backend_uses_what_label_studio_sends_to_setup(
    label_studio, backend_server, guide_model, make_project, tmp_path
):
    client = label_studio.client()
    env = _backend_env(label_studio, guide_model, tmp_path, token=None)
    backend = backend_server("gunicorn", env=env)
    _connect_and_predict(
        label_studio, client, backend, str(guide_model.tag), make_project
    )
