"""A server keeps serving the newest promoted version of its model."""

import time

from backend import store
from backend.inference import ServedModel
from tests.unit.test_store import save


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_watching_server_switches_to_a_promoted_version_without_a_request(
    bentoml_home,
):
    first = save("served_watch", store.PROMOTED)
    served = ServedModel("served_watch:latest", refresh_seconds=0.2)
    served.load()
    served.watch()
    assert served.current_tag() == first.tag
    save("served_watch", store.REJECTED)
    time.sleep(1.0)
    assert served.current_tag() == first.tag
    promoted = save("served_watch", store.PROMOTED)
    assert wait_for(lambda: served.current_tag() == promoted.tag)


def test_without_a_watcher_a_request_picks_up_the_new_version(bentoml_home):
    save("served_poll", store.PROMOTED)
    served = ServedModel("served_poll:latest", refresh_seconds=0)
    served.load()
    promoted = save("served_poll", store.PROMOTED)
    assert served.get().tag == promoted.tag


def test_a_pinned_tag_never_changes(bentoml_home):
    first = save("served_pinned", store.PROMOTED)
    served = ServedModel(first.tag, refresh_seconds=0)
    served.load()
    save("served_pinned", store.PROMOTED)
    assert served.get().tag == first.tag
