"""The SDK's Flask app with this backend's manager, input checks and JSON errors."""

from __future__ import annotations

import json
import logging

import label_studio_ml.api as sdk_api
from flask import Flask, Response, g, jsonify, request
from label_studio_ml.model import LabelStudioMLManager, ModelWrapper
from werkzeug.exceptions import HTTPException

from backend import service as service_module
from backend import store
from backend.errors import ClientError
from backend.label_config import LabelConfigError
from backend.logs import configure_logging
from backend.service import Service
from backend.settings import Settings

logger = logging.getLogger(__name__)

_INTERNAL = {
    "error": "InternalError",
    "message": "The backend failed on this request; its log has the details.",
}


class BackendManager(LabelStudioMLManager):
    """The SDK's manager, with model versions that are BentoML tags.

    ``/setup`` still builds a new model instance per call (cheap: the network
    is shared), but the version it reports is the served tag instead of a job
    id, and ``/predict`` works before any ``/setup``. Webhooks go to the
    training job manager, which starts no process for events it ignores.
    """

    @classmethod
    def fetch(cls, project=None, label_config=None, force_reload=False, **kwargs):
        kwargs.update(cls.init_kwargs)
        kwargs.pop("model_version", None)
        model = cls.model_class(label_config=label_config, project=project, **kwargs)
        cls._current_model = ModelWrapper(
            model=model, model_version=model.model_version
        )
        return cls._current_model

    @classmethod
    def predict(
        cls,
        tasks,
        project=None,
        label_config=None,
        force_reload=False,
        try_fetch=True,
        **kwargs,
    ):
        wrapper = cls._current_model
        if not wrapper:
            wrapper = cls.fetch(project, label_config)
        predictions = wrapper.model.predict(tasks, **kwargs)
        wrapper.model_version = wrapper.model.model_version
        return predictions, wrapper

    @classmethod
    def get_job_manager(cls):
        return service_module.current().jobs

    @classmethod
    def webhook(cls, event, data):
        return cls.get_job_manager().submit(event, data)

    @classmethod
    def is_training(cls, project):
        return service_module.current().jobs.status(project)


def _error(status: int, body: dict) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _require_object(body, route: str):
    if not isinstance(body, dict):
        raise ClientError(
            f"{route} expects a JSON object in the request body (Content-Type:"
            " application/json).",
            field="body",
        )


def _check_request() -> Response | None:
    """Refuse malformed requests before the SDK's views see them."""
    if request.method != "POST":
        return None
    route = request.path.rstrip("/") or "/"
    if route not in ("/predict", "/setup", "/webhook", "/train", "/versions"):
        return None
    body = request.get_json(force=True, silent=True)
    try:
        _require_object(body, route)
        if route == "/predict":
            tasks = body.get("tasks")
            if not isinstance(tasks, list):
                raise ClientError(
                    "'tasks' must be a list of Label Studio tasks, each an object"
                    ' with a "data" object holding the image URL.',
                    field="tasks",
                )
            for name, kind in (("label_config", str), ("params", dict)):
                if body.get(name) is not None and not isinstance(body[name], kind):
                    raise ClientError(
                        f"'{name}' must be a {'string' if kind is str else 'object'}.",
                        field=name,
                    )
            if isinstance(body.get("label_config"), str):
                Service.target(body["label_config"])
        elif route == "/setup":
            schema = body.get("schema")
            if not isinstance(schema, str):
                raise ClientError(
                    "'schema' must be the project's labeling config (XML text).",
                    field="schema",
                )
            Service.target(schema)
        elif route == "/webhook" and not (
            isinstance(body.get("action"), str) and body["action"]
        ):
            raise ClientError(
                "'action' must name the webhook event, such as START_TRAINING"
                " or ANNOTATION_CREATED.",
                field="action",
            )
    except LabelConfigError as exc:
        exc.field = "schema" if route == "/setup" else "label_config"
        return _error(exc.status, exc.to_dict())
    except ClientError as exc:
        return _error(exc.status, exc.to_dict())
    return None


def _scrub_response(response: Response) -> Response:
    """Keep the SDK's tracebacks out of answers, and give client errors a 4xx."""
    client_error = g.pop("client_error", None)
    if client_error is not None and response.status_code >= 500:
        return _error(client_error.status, client_error.to_dict())
    if response.status_code >= 500 and response.mimetype == "application/json":
        try:
            body = json.loads(response.get_data())
        except ValueError:
            body = None
        if not isinstance(body, dict) or "error" not in body:
            return _error(response.status_code, _INTERNAL)
    if request.path.rstrip("/") in ("", "/health") and response.status_code == 200:
        body = response.get_json(silent=True) or {}
        served = service_module.current().served
        body["model_version"] = served.current_tag()
        response.set_data(json.dumps(body))
    return response


def _versions() -> Response:
    service = service_module.current()
    served = service.served.current_tag()
    versions = store.list_versions(service.settings.model_name)
    return jsonify(
        {
            "versions": [version.tag for version in versions],
            "model_version": served,
            "details": [
                {
                    "tag": version.tag,
                    "stage": version.stage,
                    "accuracy": version.accuracy,
                    "created": version.created.isoformat(),
                    "served": version.tag == served,
                }
                for version in versions
            ],
        }
    )


def _handle_client_error(error: ClientError):
    return _error(error.status, error.to_dict())


def _handle_http_error(error: HTTPException):
    return _error(
        error.code or 500,
        {"error": error.name.replace(" ", ""), "message": error.description},
    )


def _handle_unexpected(error: Exception):
    logger.exception("Unhandled error on %s %s", request.method, request.path)
    return _error(500, _INTERNAL)


def _install_hooks(app: Flask) -> None:
    if app.config.get("BACKEND_HOOKS_INSTALLED"):
        return
    app.config["BACKEND_HOOKS_INSTALLED"] = True
    app.before_request(_check_request)
    app.after_request(_scrub_response)
    app.add_url_rule("/versions", "list_versions", _versions, methods=["GET"])
    app.register_error_handler(ClientError, _handle_client_error)
    app.register_error_handler(HTTPException, _handle_http_error)
    for kind in (Exception, FileNotFoundError, AssertionError, IndexError):
        app.register_error_handler(kind, _handle_unexpected)


def create_app(settings: Settings, model_class=None, *, load_model: bool = True):
    """Build the SDK's WSGI app for this backend.

    Loads the served model before returning, because Label Studio gives
    ``/health`` one second and ``/setup`` three.

    :param settings: the backend's settings.
    :param model_class: the ``LabelStudioMLBase`` subclass (``model.py``'s).
    :param load_model: load the served model now (tests of start-up errors
        pass False).
    :raises store.ModelNotFound: when the store has no model to serve.
    """
    configure_logging(settings.log_level)
    if model_class is None:
        from model import BentoImageClassifier as model_class
    service = service_module.install(Service(settings))
    store.sweep_staging()
    if load_model:
        model = service.served.load()
        service.served.watch()
        logger.info(
            "Serving %s (%d classes) from BentoML store %s",
            model.tag,
            len(model.classes),
            settings.bentoml_home or "(default ~/bentoml)",
        )
    sdk_api._manager = BackendManager()
    app = sdk_api.init_app(model_class=model_class, model_dir=str(settings.model_dir))
    _install_hooks(app)
    return app
