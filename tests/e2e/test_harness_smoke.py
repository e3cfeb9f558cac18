"""Prove the end-to-end harness: a real Label Studio takes and serves images."""

from __future__ import annotations

import re

import pytest

from .labelstudio import LabelStudioAPIError, LabelStudioClient

PLANET_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="choice" toName="image">'
    '<Choice value="Earth"/><Choice value="Mars"/></Choices></View>'
)


@pytest.mark.e2e
def test_uploaded_images_become_tasks_whose_files_need_a_valid_token(
    label_studio, make_project, celestial_images
):
    client = label_studio.client()
    project = make_project(label_config=PLANET_CONFIG)
    images = [celestial_images[name][0] for name in ("Earth", "Mars", "Moon")]

    task_ids = client.import_files(project["id"], images)
    tasks = client.list_tasks(project["id"])

    assert len(task_ids) == 3
    assert sorted(task["id"] for task in tasks) == sorted(task_ids)
    upload_url = re.compile(rf"^/data/upload/{project['id']}/[0-9a-f]{{8}}-(.+)$")
    urls = {}
    for task in tasks:
        match = upload_url.match(task["data"]["image"])
        assert match, f"unexpected image URL {task['data']['image']!r}"
        urls[match.group(1)] = task["data"]["image"]
    assert sorted(urls) == sorted(image.name for image in images)

    image = images[1]
    url = urls[image.name]
    assert client.download(url) == image.read_bytes()
    assert label_studio.pat_client().download(url) == image.read_bytes()
    stranger = LabelStudioClient(label_studio.url, legacy_token="0" * 40)
    with pytest.raises(LabelStudioAPIError) as refused:
        stranger.download(url)
    assert refused.value.status_code == 401
