"""Settings come from the environment, with documented defaults."""

from pathlib import Path

import pytest

from backend.settings import DEFAULT_MODEL_TAG, SettingsError, load_settings


def test_defaults_when_nothing_is_set():
    settings = load_settings({})
    assert settings.model_tag == DEFAULT_MODEL_TAG
    assert settings.port == 9090
    assert settings.training_queue == "local"
    assert settings.pinned_version is None
    assert not str(settings.model_dir).startswith(str(Path(__file__).parents[2]))


def test_values_are_read_and_a_bare_model_name_means_latest(tmp_path):
    settings = load_settings(
        {
            "MODEL_TAG": "my_model",
            "PORT": "9191",
            "MODEL_DIR": str(tmp_path),
            "LABEL_STUDIO_URL": "http://ls.example:8080/",
            "TRAINING_QUEUE": "REDIS",
            "TRAIN_EVERY": "3",
        }
    )
    assert settings.model_tag == "my_model:latest"
    assert settings.model_name == "my_model"
    assert settings.port == 9191
    assert settings.model_dir == tmp_path
    assert settings.label_studio_url == "http://ls.example:8080"
    assert settings.uses_queue
    assert settings.train_every == 3
    assert settings.cache_dir == tmp_path / "image-cache"


def test_pinned_version_is_recognised():
    assert load_settings({"MODEL_TAG": "m:abc123"}).pinned_version == "abc123"


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("PORT", "eighty", "PORT='eighty' is not a valid int"),
        ("TRAIN_EVERY", "0", "at least 1"),
        ("TRAINING_QUEUE", "celery", "local, redis"),
        ("TRAIN_HOLDOUT", "0.95", "between 0.05 and 0.5"),
    ],
)
def test_bad_values_name_the_variable_and_the_fix(name, value, hint):
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert hint in str(caught.value)
