"""Logging set-up: one format for the service's story, quiet libraries."""

from __future__ import annotations

import logging
import sys

_QUIET = (
    "bentoml",
    "tensorflow",
    "absl",
    "h5py",
    "urllib3",
    "PIL",
    "httpx",
    "rq.worker",
)


def configure_logging(level: str = "INFO") -> None:
    """Send log records to standard error, once per process.

    :param level: the ``LOG_LEVEL`` setting (DEBUG, INFO, WARNING or ERROR).
    """
    root = logging.getLogger()
    if not getattr(root, "_backend_configured", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")
        )
        root.handlers[:] = [handler]
        root._backend_configured = True
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
