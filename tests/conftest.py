"""Shared fixtures: a temporary BentoML store for the whole session, real images."""

import os
import tempfile
from pathlib import Path

import pytest

# BentoML reads BENTOML_HOME once per process, so the temporary store must be
# chosen before anything touches it; it never falls back to the user's store.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-test-store-")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data" / "celestial-bodies"
CLASSES = sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir())
GUIDE_MODEL = "celestial_bodies_classifier_model"


def images_of(label: str, start: int = 0, stop: int | None = None) -> list[Path]:
    """Bundled images of one class, in a stable order (by their number)."""
    files = sorted(
        (DATA_DIR / label).glob("*.jpg"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    )
    return files[start:stop]


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    """The session's temporary BentoML store."""
    return Path(os.environ["BENTOML_HOME"])


@pytest.fixture(scope="session")
def guide_model(bentoml_home):
    """A guide-style model (weak, grayscale) trained on the first 50 images per class.

    Images from number 50 on are never seen by it.
    """
    from tests.guide_model import save_guide_style_model

    files = [path for label in CLASSES for path in images_of(label, 0, 50)]
    return save_guide_style_model(DATA_DIR, name=GUIDE_MODEL, files=files)
