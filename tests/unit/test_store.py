"""Versions in a real BentoML store: stages, the served tag, atomic saves."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

from backend import store
from backend.custom_objects import make_postprocess, make_preprocess


def tiny_network(classes: int = 2):
    network = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(classes)]
    )
    network.compile(optimizer="adam", loss="mse")
    return network


def save(name, stage, classes=("Earth", "Mars")):
    return store.save_version(
        name,
        tiny_network(len(classes)),
        custom_objects={
            "preprocess": make_preprocess(8, 3),
            "postprocess": make_postprocess(classes),
        },
        external_modules=[],
        metadata={"classes": list(classes), "metrics": {"accuracy": 0.5}},
        stage=stage,
        extra_files={"note.txt": b"hello"},
    )


def test_latest_serves_the_newest_version_that_was_not_rejected(bentoml_home):
    first = save("store_stages", store.PROMOTED)
    second = save("store_stages", store.REJECTED)
    assert store.resolve("store_stages:latest").tag == first.tag
    assert store.resolve("store_stages").tag == first.tag
    assert store.resolve(second.tag).tag == second.tag
    third = save("store_stages", store.PROMOTED)
    assert store.resolve("store_stages:latest").tag == third.tag
    assert [v.stage for v in store.list_versions("store_stages")] == [
        "promoted",
        "rejected",
        "promoted",
    ]
    assert (third.path / "note.txt").read_bytes() == b"hello"
    assert third.accuracy == 0.5


def test_bentoml_latest_points_at_the_promoted_version_for_the_guides_service(
    bentoml_home,
):
    promoted = save("store_latest", store.PROMOTED)
    save("store_latest", store.REJECTED)
    import bentoml

    assert str(bentoml.models.get("store_latest:latest").tag) == promoted.tag


def test_missing_models_raise_a_message_that_says_how_to_get_one(bentoml_home):
    with pytest.raises(store.ModelNotFound, match="python -m backend train"):
        store.resolve("no_such_model:latest")
    with pytest.raises(store.ModelNotFound, match="python -m backend models"):
        store.resolve("no_such_model:abc")


def test_a_half_written_version_folder_is_not_listed(bentoml_home):
    good = save("store_broken", store.PROMOTED)
    (bentoml_home / "models" / "store_broken" / "halfdone").mkdir()
    assert [v.tag for v in store.list_versions("store_broken")] == [good.tag]
    assert store.resolve("store_broken:latest").tag == good.tag


def test_saved_custom_objects_load_in_a_process_without_this_package(
    bentoml_home, tmp_path
):
    version = save("store_portable", store.PROMOTED)
    image = tmp_path / "a.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(image)
    script = textwrap.dedent(
        f"""
        import json, sys
        import bentoml
        from PIL import Image
        model = bentoml.keras.get({version.tag!r})
        pre = model.custom_objects["preprocess"]
        post = model.custom_objects["postprocess"]
        network = bentoml.keras.load_model({version.tag!r})
        batch = pre(Image.open({str(image)!r}))
        out = post(network.predict(batch, verbose=0))
        print(json.dumps({{"shape": list(batch.shape), "out": out}}))
        assert "backend" not in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["shape"] == [1, 8, 8, 3]
    assert answer["out"]["prediction"] in ("Earth", "Mars")
    assert sum(answer["out"]["probabilities"].values()) == pytest.approx(1.0)


def test_preprocess_and_postprocess_follow_the_guides_contract():
    batch = make_preprocess(32, 1)(Image.new("RGB", (64, 48), (255, 255, 255)))
    assert batch.shape == (1, 32, 32, 1) and batch.dtype == np.float32
    assert batch.max() == pytest.approx(1.0)
    out = make_postprocess(["a", "b", "c"])(np.array([[0.0, 3.0, 1.0]]))
    assert out["prediction"] == "b"
    assert max(out["probabilities"], key=out["probabilities"].get) == "b"
