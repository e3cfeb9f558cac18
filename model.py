"""The Label Studio ML backend: a BentoML Keras image classifier behind the SDK."""

from __future__ import annotations

import logging

from flask import g, has_request_context, request
from label_studio_ml.model import LabelStudioMLBase

from backend import service as service_module
from backend.errors import ClientError
from backend.label_config import ClassificationTarget
from backend.predictions import predict_tasks

logger = logging.getLogger(__name__)


def _remember(error: ClientError) -> ClientError:
    """Note a client error for the response hooks (the SDK turns it into a 500)."""
    if has_request_context():
        g.client_error = error
    return error


class BentoImageClassifier(LabelStudioMLBase):
    """Pre-annotates image tasks with a BentoML model and retrains it.

    The SDK builds a new instance on every ``/setup`` and for every training
    job, so an instance is cheap: the network itself is loaded once per process
    and shared (see :class:`backend.inference.ServedModel`).
    """

    TRAIN_EVENTS = (
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATION_DELETED",
        "START_TRAINING",
    )

    def __init__(self, label_config=None, train_output=None, **kwargs):
        super().__init__(label_config=label_config, train_output=train_output, **kwargs)
        self.service = service_module.current()
        self.project = str(kwargs.get("project") or "")
        self.target: ClassificationTarget | None = None
        if label_config:
            try:
                self.target = self.service.target(label_config)
            except ClientError as exc:
                raise _remember(exc) from None
        if kwargs.get("hostname") or kwargs.get("access_token"):
            self.service.connections.learn(
                kwargs.get("hostname", ""), kwargs.get("access_token", "")
            )

    @property
    def model_version(self) -> str:
        """The BentoML tag being served, which Label Studio shows as the version."""
        return self.service.served.get().tag

    def _target_for_request(self) -> ClassificationTarget:
        body = request.get_json(silent=True) if has_request_context() else None
        label_config = body.get("label_config") if isinstance(body, dict) else None
        if isinstance(label_config, str) and label_config.strip():
            try:
                return self.service.target(label_config)
            except ClientError as exc:
                raise _remember(exc) from None
        if self.target is None:
            raise _remember(
                ClientError(
                    "No labeling config: send 'label_config' with /predict or call"
                    " /setup with the project's 'schema' first.",
                    field="label_config",
                )
            )
        return self.target

    def predict(self, tasks, **kwargs):
        """Predict a Choices label for each task, in order (one item per task)."""
        target = self._target_for_request()
        model = self.service.served.get()
        items = predict_tasks(
            tasks,
            target,
            model,
            self.service.loader,
            batch_size=self.service.settings.predict_batch_size,
        )
        predicted = sum("result" in item for item in items)
        logger.debug(
            "Predicted %d of %d tasks with %s", predicted, len(items), model.tag
        )
        return items

    def fit(self, tasks, workdir=None, **kwargs):
        """Retrain from the project's annotations (one run, in a training process).

        Called by the job manager for a training event; ``kwargs`` carries the
        webhook's ``event`` and ``data``. Returns the run's summary.
        """
        from backend.training import train_project

        return train_project(self.service, kwargs.get("data") or {}, self.project)
