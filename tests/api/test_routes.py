"""The SDK's routes through this backend: answers, errors, no tracebacks."""

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import CLASSES, DATA_DIR, images_of

CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="choice" toName="image">'
    + "".join(f'<Choice value="{name}"/>' for name in CLASSES)
    + "</Choices></View>"
)
TWO_CLASSES = (
    '<View><Image name="img" value="$picture"/><Choices name="body" toName="img">'
    '<Choice value="earth"/><Choice value="Mars"/></Choices></View>'
)


@pytest.fixture(scope="module")
def image_server():
    """A plain HTTP server of the bundled images (a non-Label-Studio URL)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(DATA_DIR))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def client(guide_model, tmp_path_factory):
    from backend.server import create_app
    from backend.settings import load_settings

    settings = load_settings(
        {
            "MODEL_TAG": str(guide_model.tag),
            "MODEL_DIR": str(tmp_path_factory.mktemp("model-dir")),
            "LOCAL_FILES_DOCUMENT_ROOT": str(DATA_DIR),
            "LOG_LEVEL": "WARNING",
        }
    )
    app = create_app(settings)
    app.testing = True
    return app.test_client()


def local(label: str, index: int) -> str:
    """A local-files URL of an image the guide-style model never saw."""
    path = images_of(label)[index]
    return f"/data/local-files/?d={label}/{path.name}"


def assert_clean_error(response, status, field=None):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict) and body.get("message")
    assert "Traceback" not in response.get_data(as_text=True)
    if field:
        assert body.get("field") == field


def test_health_reports_the_served_tag(client, guide_model):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "UP"
    assert response.get_json()["model_version"] == str(guide_model.tag)


def test_setup_answers_the_bentoml_tag_as_model_version(client, guide_model):
    response = client.post(
        "/setup", json={"project": "1.1700000000", "schema": CONFIG, "hostname": ""}
    )
    assert response.status_code == 200
    assert response.get_json()["model_version"] == str(guide_model.tag)


def test_setup_refuses_a_config_without_choices_and_says_what_to_add(client):
    response = client.post(
        "/setup",
        json={"project": "1.1", "schema": '<View><Image name="i" value="$i"/></View>'},
    )
    assert_clean_error(response, 400, field="schema")
    assert "<Choices" in response.get_json()["message"]


def test_predict_answers_every_task_in_order_and_skips_only_the_broken_one(
    client, guide_model, image_server
):
    labels = ["Earth", "Mars", "Saturn"]
    tasks = [
        {"id": i + 1, "data": {"image": local(n, 60)}} for i, n in enumerate(labels)
    ]
    missing = "/data/local-files/?d=Earth/Earth_99999.jpg"
    tasks.insert(1, {"id": 99, "data": {"image": missing}})
    moon = images_of("Moon")[70].name
    tasks.append({"id": 100, "data": {"image": f"{image_server}/Moon/{moon}"}})
    tasks.append({"id": 101, "data": {"other": "x"}})
    response = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert response.status_code == 200
    body = response.get_json()
    results = body["results"]
    assert len(results) == len(tasks)
    assert body["model_version"] == str(guide_model.tag)
    assert "result" not in results[1] and "result" not in results[5]
    for item in (results[0], results[2], results[3], results[4]):
        (region,) = item["result"]
        assert region["from_name"] == "choice" and region["to_name"] == "image"
        assert region["type"] == "choices"
        assert region["value"]["choices"][0] in CLASSES
        assert 0 < item["score"] <= 1
        assert item["model_version"] == str(guide_model.tag)


def test_predict_emits_only_labels_of_the_asking_projects_config(client):
    tasks = [
        {"id": n, "data": {"picture": local(label, n)}}
        for n, label in enumerate(["Earth", "Mars", "Jupiter", "Venus"], start=80)
    ]
    response = client.post(
        "/predict", json={"tasks": tasks, "label_config": TWO_CLASSES}
    )
    results = response.get_json()["results"]
    assert len(results) == 4
    for item in results:
        (region,) = item["result"]
        assert (region["from_name"], region["to_name"]) == ("body", "img")
        assert region["value"]["choices"][0] in ("earth", "Mars")


def test_versions_is_answered_on_get(client, guide_model):
    response = client.get("/versions")
    assert response.status_code == 200
    body = response.get_json()
    assert str(guide_model.tag) in body["versions"]
    assert body["model_version"] == str(guide_model.tag)


def test_webhook_ignores_events_that_do_not_train(client):
    response = client.post("/webhook", json={"action": "TASKS_CREATED", "tasks": []})
    assert response.status_code == 201
    assert response.get_json()["status"] == "ignored"


def test_training_webhook_without_a_project_is_a_clear_400(client):
    response = client.post("/webhook", json={"action": "START_TRAINING"})
    assert_clean_error(response, 400, field="project")


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/predict", b"{not json", "body"),
        ("/predict", b"[]", "body"),
        ("/predict", json.dumps({"tasks": "nope"}).encode(), "tasks"),
        (
            "/predict",
            json.dumps({"tasks": [], "label_config": 5}).encode(),
            "label_config",
        ),
        (
            "/predict",
            json.dumps({"tasks": [], "label_config": "<View"}).encode(),
            "label_config",
        ),
        ("/predict", json.dumps({"tasks": [], "params": []}).encode(), "params"),
        ("/setup", b"", "body"),
        ("/setup", json.dumps({"project": "1"}).encode(), "schema"),
        ("/setup", json.dumps({"schema": 3}).encode(), "schema"),
        ("/webhook", b"null", "body"),
        ("/webhook", json.dumps({"project": {"id": 1}}).encode(), "action"),
        ("/webhook", json.dumps({"action": 7}).encode(), "action"),
        ("/versions", b"{{", "body"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field_and_no_traceback(
    client, route, body, field
):
    response = client.post(route, data=body, content_type="application/json")
    assert_clean_error(response, 400, field=field)


def test_unknown_route_and_method_are_json_errors(client):
    assert_clean_error(client.get("/nowhere"), 404)
    assert_clean_error(client.delete("/predict"), 405)


def test_predict_with_tasks_that_are_not_objects_answers_each_without_result(client):
    response = client.post(
        "/predict", json={"tasks": [1, "x", None], "label_config": CONFIG}
    )
    assert response.status_code == 200
    assert [("result" in item) for item in response.get_json()["results"]] == [
        False,
        False,
        False,
    ]
