"""Benchmark of /predict against the in-process floor, as ratios in one run.

Run with ``make bench``. It builds a guide-style model in a temporary BentoML
store, then times, on the same bundled images:

- floor: decoding plus one batched forward pass, in process;
- naive: ``model.predict`` called once per image (what a per-task server does);
- backend: ``/predict`` through the SDK app with all tasks in one request,
  cold (first request) and warm, images read from a mounted local-files root.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-bench-")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from backend.inference import LoadedModel  # noqa: E402
from backend.server import create_app  # noqa: E402
from backend.settings import load_settings  # noqa: E402
from backend.store import resolve  # noqa: E402
from tests.guide_model import save_guide_style_model  # noqa: E402

DATA = REPO / "data" / "celestial-bodies"
TASKS = int(os.environ.get("BENCH_TASKS", "1000"))
NAIVE_SAMPLE = 100


def _timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    files = sorted(DATA.glob("*/*.jpg"))
    files = (files * (TASKS // len(files) + 1))[:TASKS]
    guide = save_guide_style_model(DATA, name="bench_model", per_class=30)
    model = LoadedModel.load(resolve(str(guide.tag)))

    def floor():
        images = []
        for path in files:
            with Image.open(path) as image:
                image.load()
                images.append(image)
        return model.probabilities(model.to_batch(images))

    floor()
    floor_seconds, _ = _timed(floor)

    def naive():
        for path in files[:NAIVE_SAMPLE]:
            with Image.open(path) as image:
                model.network.predict(model.preprocess(image), verbose=0)

    naive()
    naive_seconds = _timed(naive)[0] * TASKS / NAIVE_SAMPLE

    settings = load_settings(
        {
            "MODEL_TAG": str(guide.tag),
            "MODEL_DIR": tempfile.mkdtemp(prefix="backend-bench-"),
            "LOCAL_FILES_DOCUMENT_ROOT": str(DATA),
            "LOG_LEVEL": "WARNING",
        }
    )
    client = create_app(settings).test_client()
    config = (
        '<View><Image name="image" value="$image"/>'
        '<Choices name="choice" toName="image">'
        + "".join(f'<Choice value="{c}"/>' for c in model.classes)
        + "</Choices></View>"
    )
    tasks = [
        {"id": i, "data": {"image": f"/data/local-files/?d={p.parent.name}/{p.name}"}}
        for i, p in enumerate(files)
    ]
    body = {"tasks": tasks, "label_config": config}
    cold_seconds, cold = _timed(lambda: client.post("/predict", json=body))
    warm_seconds, warm = _timed(lambda: client.post("/predict", json=body))
    for answer in (cold, warm):
        results = answer.get_json()["results"]
        assert answer.status_code == 200 and len(results) == TASKS
        assert all("result" in item for item in results)

    rows = [
        ("floor: decode + batched forward", floor_seconds),
        ("naive: model.predict per image", naive_seconds),
        ("backend /predict, first request", cold_seconds),
        ("backend /predict, warm", warm_seconds),
    ]
    print(f"\n{TASKS} tasks, one request; ratios to the in-process floor")
    print(f"{'measure':<36} {'seconds':>8} {'ms/task':>8} {'ratio':>7}")
    for name, seconds in rows:
        print(
            f"{name:<36} {seconds:>8.2f} {1000 * seconds / TASKS:>8.2f}"
            f" {seconds / floor_seconds:>7.2f}"
        )


if __name__ == "__main__":
    main()
