"""Images from Label Studio and elsewhere: tokens, cache, limits, local mounts."""

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.images import ImageError, ImageLoader
from backend.labelstudio import LabelStudioConnection
from tests.conftest import images_of

JPEG = images_of("Earth")[0].read_bytes()


class Recorder(BaseHTTPRequestHandler):
    """Serves the JPEG and remembers each request's path and Authorization."""

    seen: list = []
    redirect_to: str = ""

    def do_GET(self):
        Recorder.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/redirect") and Recorder.redirect_to:
            self.send_response(302)
            self.send_header("Location", Recorder.redirect_to)
            self.end_headers()
            return
        if self.path.startswith("/big"):
            body = b"x" * 5000
        elif self.path.startswith("/broken"):
            body = b"not an image"
        elif self.path.startswith("/missing"):
            self.send_response(404)
            self.end_headers()
            return
        else:
            body = JPEG
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def servers():
    Recorder.seen = []
    studio, studio_url = serve()
    other, other_url = serve()
    yield studio_url, other_url
    studio.shutdown()
    other.shutdown()


def loader(tmp_path, url, **kwargs):
    connection = LabelStudioConnection(url, "a" * 40)
    return ImageLoader(lambda: connection, tmp_path / "cache", **kwargs)


def test_upload_paths_are_fetched_from_label_studio_with_its_token(tmp_path, servers):
    studio, _ = servers
    image = loader(tmp_path, studio).load("/data/upload/3/abc-Earth.jpg")
    assert image.size == (128, 128)
    assert Recorder.seen == [("/data/upload/3/abc-Earth.jpg", "Token " + "a" * 40)]


def test_other_hosts_never_get_the_token_even_after_a_redirect(tmp_path, servers):
    studio, other = servers
    Recorder.redirect_to = f"{other}/elsewhere.jpg"
    images = loader(tmp_path, studio)
    images.load(f"{other}/plain.jpg")
    images.load(f"{studio}/redirect/x.jpg")
    assert ("/plain.jpg", None) in Recorder.seen and (
        "/elsewhere.jpg",
        None,
    ) in Recorder.seen
    assert ("/redirect/x.jpg", "Token " + "a" * 40) in Recorder.seen


def test_downloads_are_cached_by_url(tmp_path, servers):
    studio, _ = servers
    images = loader(tmp_path, studio)
    images.load("/data/upload/1/a.jpg")
    images.load("/data/upload/1/a.jpg")
    assert len(Recorder.seen) == 1


def test_cloud_storage_goes_through_label_studio_for_the_task(tmp_path, servers):
    studio, _ = servers
    loader(tmp_path, studio).load("s3://bucket/Earth.jpg", task_id=12)
    path, auth = Recorder.seen[0]
    encoded = base64.urlsafe_b64encode(b"s3://bucket/Earth.jpg").decode()
    assert path == f"/tasks/12/resolve/?fileuri={encoded}"
    assert auth == "Token " + "a" * 40


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("/big.jpg", "over IMAGE_MAX_BYTES"),
        ("/broken.jpg", "not a readable image"),
        ("/missing.jpg", "HTTP 404"),
        ("ftp://x/y.jpg", "not a URL this backend can fetch"),
        ("s3://bucket/a.jpg", "needs a task id"),
    ],
)
def test_unreadable_images_raise_a_clear_reason(tmp_path, servers, reference, reason):
    studio, _ = servers
    with pytest.raises(ImageError, match=reason):
        loader(tmp_path, studio, max_bytes=4000).load(reference)


def test_load_many_returns_each_failure_in_its_place(tmp_path, servers):
    studio, _ = servers
    results = loader(tmp_path, studio).load_many(
        [("/data/upload/1/a.jpg", 1), ("/missing.jpg", 2), ("/data/upload/1/b.jpg", 3)]
    )
    assert [type(r).__name__ for r in results] == [
        "JpegImageFile",
        "ImageError",
        "JpegImageFile",
    ]


def test_mounted_folders_are_read_directly_and_stay_confined(tmp_path):
    uploads = tmp_path / "upload"
    (uploads / "4").mkdir(parents=True)
    (uploads / "4" / "x-Earth.jpg").write_bytes(JPEG)
    (tmp_path / "secret.jpg").write_bytes(JPEG)
    images = ImageLoader(
        lambda: LabelStudioConnection("", ""),
        tmp_path / "cache",
        upload_dir=uploads,
        local_files_root=uploads,
    )
    assert images.load("/data/upload/4/x-Earth.jpg").size == (128, 128)
    assert images.load("/data/local-files/?d=4/x-Earth.jpg").size == (128, 128)
    with pytest.raises(ImageError):
        images.load("/data/local-files/?d=../secret.jpg")
    with pytest.raises(ImageError):
        images.load("/data/upload/../secret.jpg")
