"""The command line, run as a user runs it, against the session's store."""

import os
import subprocess
import sys

from backend import store
from tests.conftest import REPO_ROOT, images_of
from tests.unit.test_store import save


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "import", "models", "predict"):
        assert command in result.stdout


def test_models_lists_versions_with_stage_and_marks_the_served_one(bentoml_home):
    promoted = save("cli_models", store.PROMOTED)
    rejected = save("cli_models", store.REJECTED)
    result = run_cli("models", env={"MODEL_TAG": "cli_models:latest"})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "rejected" in lines[rejected.tag]
    assert "promoted" in lines[promoted.tag] and "<- served" in lines[promoted.tag]


def test_predict_prints_a_label_and_score_per_image(bentoml_home):
    version = save("cli_predict", store.PROMOTED)
    images = [str(path) for path in images_of("Mars", 0, 2)]
    result = run_cli("predict", *images, "--tag", version.tag)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [row[0] for row in rows] == images
    assert all(row[1] in ("Earth", "Mars") and 0 < float(row[2]) <= 1 for row in rows)


def test_a_missing_model_is_an_error_that_says_what_to_do(bentoml_home):
    result = run_cli("predict", str(images_of("Mars")[0]), "--tag", "nothing:latest")
    assert result.returncode == 1
    assert "python -m backend train" in result.stderr


def test_a_bad_setting_is_reported_with_its_name():
    result = run_cli("models", env={"PORT": "x"})
    assert result.returncode == 2
    assert "PORT='x'" in result.stderr


def test_import_brings_back_an_exported_model(bentoml_home, tmp_path):
    import bentoml

    version = save("cli_import", store.PROMOTED)
    exported = tmp_path / "model.bentomodel"
    bentoml.models.export_model(version.tag, str(exported))
    bentoml.models.delete(version.tag)
    result = run_cli("import", str(exported))
    assert result.returncode == 0, result.stderr
    assert f"imported {version.tag}" in result.stdout
    assert [v.tag for v in store.list_versions("cli_import")] == [version.tag]
