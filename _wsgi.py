"""The backend's WSGI server, as ``label-studio-ml init`` lays it out.

``label-studio-ml start .`` runs this file (Flask's server); gunicorn imports its
module-level ``app`` (``gunicorn _wsgi:app``). Settings come from the
environment (see the README); ``--port`` and ``--host`` override PORT and HOST.
"""

import argparse
import os
import sys

from backend.server import create_app
from backend.settings import SettingsError, load_settings
from backend.store import ModelNotFound
from model import BentoImageClassifier


def _build_app():
    try:
        settings = load_settings()
        return settings, create_app(settings, BentoImageClassifier)
    except (SettingsError, ModelNotFound) as exc:
        sys.stderr.write(f"The backend cannot start: {exc}\n")
        # 3 is what tells gunicorn to stop instead of restarting the worker.
        raise SystemExit(3) from None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Label Studio ML backend (BentoML)")
    parser.add_argument("-p", "--port", type=int, help="port (default: PORT, 9090)")
    parser.add_argument("--host", help="address to listen on (default: HOST)")
    parser.add_argument("-d", "--debug", action="store_true", help="Flask debug mode")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="LOG_LEVEL"
    )
    args, _ = parser.parse_known_args()
    if args.log_level:
        os.environ["LOG_LEVEL"] = args.log_level
    settings, app = _build_app()
    app.run(
        host=args.host or settings.host,
        port=args.port or settings.port,
        debug=args.debug,
        threaded=True,
        use_reloader=False,
    )
else:
    settings, app = _build_app()
