"""The command line: ``python -m backend train|import|models|predict|...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backend.logs import configure_logging
from backend.settings import REPO_ROOT, SettingsError, load_settings

DEFAULT_DATA = REPO_ROOT / "data" / "celestial-bodies"


def _print_metrics(summary: dict, metadata: dict) -> None:
    metrics = metadata.get("metrics", {})
    print(f"model version: {summary['model_version']} ({summary['stage']})")
    print(
        f"held-out accuracy: {metrics.get('accuracy', 0):.4f}"
        f" on {metrics.get('count')} images"
        f" (train {metadata['counts']['train']}, recipe {metadata['recipe']})"
    )
    for name, recall in metrics.get("per_class_recall", {}).items():
        print(f"  recall {name:<12} {recall}")


def _train(args, settings) -> int:
    from backend import training

    name = args.name or settings.model_name
    version, summary = training.train_folder(
        name, Path(args.data_dir), holdout=args.holdout, seed=args.seed
    )
    _print_metrics(summary, version.metadata)
    print(f"confusion matrix picture: {version.path / 'confusion_matrix.png'}")
    return 0


def _ensure(args, settings) -> int:
    from backend import store, training

    try:
        version = store.resolve(settings.model_tag)
    except store.ModelNotFound:
        print(
            f"No {settings.model_tag} in the BentoML store; training the default"
            f" model from {args.data_dir}"
        )
        version, summary = training.train_folder(
            settings.model_name, Path(args.data_dir), holdout=0.2, seed=args.seed
        )
        _print_metrics(summary, version.metadata)
        return 0
    print(f"Found {version.tag} in the BentoML store; nothing to train.")
    return 0


def _import(args, settings) -> int:
    from backend import store

    version = store.import_file(Path(args.file))
    print(f"imported {version.tag}")
    return 0


def _models(args, settings) -> int:
    from backend import store

    name = args.name or settings.model_name
    versions = store.list_versions(name)
    if not versions:
        print(f"No versions of {name} in the BentoML store.")
        return 1
    try:
        served = store.resolve(settings.model_tag).tag
    except store.ModelNotFound:
        served = None
    print(f"{'tag':<48} {'stage':<9} {'accuracy':>8}  created")
    for version in versions:
        accuracy = "-" if version.accuracy is None else f"{version.accuracy:.4f}"
        mark = "  <- served" if version.tag == served else ""
        print(
            f"{version.tag:<48} {version.stage:<9} {accuracy:>8}"
            f"  {version.created:%Y-%m-%d %H:%M:%S}{mark}"
        )
    return 0


def _predict(args, settings) -> int:
    from PIL import Image

    from backend import store
    from backend.inference import LoadedModel

    model = LoadedModel.load(store.resolve(args.tag or settings.model_tag))
    images = []
    for path in args.images:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    for path, scores in zip(args.images, model.classify(images)):
        print(f"{path}\t{scores.label}\t{scores.score:.4f}")
    return 0


def _train_project(args, settings) -> int:
    from backend.jobs import run_local_job

    result = run_local_job(settings, json.loads(sys.stdin.read() or "{}"))
    print(json.dumps(result))
    return 0


def _worker(args, settings) -> int:
    from backend.jobs import run_worker

    run_worker(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m backend``."""
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Manage the BentoML image classifier behind the Label Studio"
        " ML backend. Settings come from the environment (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a new version from a folder with one folder per class"
    )
    train.add_argument("data_dir", help="folder of class folders of images")
    train.add_argument("--name", help="BentoML model name (default: from MODEL_TAG)")
    train.add_argument("--holdout", type=float, default=0.2, help="held-out fraction")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.set_defaults(handler=_train)

    ensure = commands.add_parser(
        "ensure-model",
        help="train the default model from bundled images unless MODEL_TAG exists",
    )
    ensure.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ensure.add_argument("--seed", type=int, default=0)
    ensure.set_defaults(handler=_ensure)

    importing = commands.add_parser("import", help="import a .bentomodel file")
    importing.add_argument("file", help="a file from `bentoml models export`")
    importing.set_defaults(handler=_import)

    models = commands.add_parser("models", help="list versions with their metrics")
    models.add_argument("--name", help="BentoML model name (default: from MODEL_TAG)")
    models.set_defaults(handler=_models)

    predict = commands.add_parser("predict", help="print label and score per image")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--tag", help="model tag (default: MODEL_TAG)")
    predict.set_defaults(handler=_predict)

    project = commands.add_parser(
        "train-project", help="(internal) one training job, its event on stdin"
    )
    project.set_defaults(handler=_train_project)

    worker = commands.add_parser(
        "worker", help="run an RQ worker for TRAINING_QUEUE=redis"
    )
    worker.set_defaults(handler=_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return args.handler(args, settings)
    except (FileNotFoundError, LookupError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
