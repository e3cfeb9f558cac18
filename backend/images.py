"""Fetching task images from wherever Label Studio keeps them, with a disk cache."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from PIL import Image

from backend.labelstudio import LabelStudioConnection

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
_MAX_REDIRECTS = 5


class ImageError(Exception):
    """One task's image could not be read; the message says why."""


def _confined(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it stays inside ``root`` and exists, else None."""
    base = root.resolve()
    candidate = (base / relative.lstrip("/")).resolve()
    if candidate != base and base not in candidate.parents:
        return None
    return candidate if candidate.is_file() else None


class ImageLoader:
    """Turns the image reference of a task into a decoded Pillow image.

    Handles Label Studio uploads (``/data/upload/...``), local storage
    (``/data/local-files/?d=...``), cloud storage (``s3://``, ``gs://``,
    ``azure-blob://``, resolved through Label Studio's presign endpoint for the
    task) and plain ``http(s)://`` URLs. Label Studio's token is only ever sent
    to Label Studio's own host. Downloads are cached on disk by URL.

    :param connection: returns the current Label Studio connection.
    :param cache_dir: folder of the download cache.
    :param max_bytes: largest image accepted, in bytes.
    :param timeout: seconds to wait for a connection and for each read.
    :param workers: parallel downloads in :meth:`load_many`.
    :param upload_dir: Label Studio's upload folder, when mounted here.
    :param local_files_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``, when
        mounted here.
    """

    def __init__(
        self,
        connection: Callable[[], LabelStudioConnection],
        cache_dir: Path,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        timeout: float = 10.0,
        workers: int = 8,
        upload_dir: Path | None = None,
        local_files_root: Path | None = None,
    ) -> None:
        self._connection = connection
        self._cache_dir = Path(cache_dir)
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._workers = workers
        self._upload_dir = upload_dir
        self._local_files_root = local_files_root
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "bentoml-label-studio-backend"
        self._pool: ThreadPoolExecutor | None = None

    def load(self, reference: str, task_id: int | None = None) -> Image.Image:
        """Fetch and decode one image.

        :param reference: the value of the task's image data key.
        :param task_id: the task's id; needed for cloud storage references.
        :raises ImageError: when the image cannot be fetched or decoded.
        """
        if not isinstance(reference, str) or not reference.strip():
            raise ImageError(f"the image reference {reference!r} is not a URL")
        path = self._local_path(reference) or self._download(reference, task_id)
        try:
            image = Image.open(path)
            image.load()
            return image
        except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
            raise ImageError(f"{reference} is not a readable image: {exc}") from None

    def load_many(
        self, items: Sequence[tuple[str, int | None]]
    ) -> list[Image.Image | ImageError]:
        """Fetch many images in parallel; each failure is returned in its place."""

        def one(item):
            try:
                return self.load(*item)
            except ImageError as exc:
                return exc

        if len(items) <= 1:
            return [one(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self._workers, thread_name_prefix="image-loader"
            )
        return list(self._pool.map(one, items))

    def _local_path(self, reference: str) -> Path | None:
        parts = urlsplit(reference)
        path = parts.path
        if path.startswith("upload/"):
            path = "/data/" + path
        if self._upload_dir and path.startswith("/data/upload/"):
            return _confined(self._upload_dir, unquote(path[len("/data/upload/") :]))
        if self._local_files_root and path.rstrip("/").endswith("/data/local-files"):
            relative = parse_qs(parts.query).get("d", [""])[0]
            if relative:
                return _confined(self._local_files_root, relative)
        return None

    def _resolve(self, reference: str, task_id: int | None) -> str:
        connection = self._connection()
        scheme = urlsplit(reference).scheme.lower()
        if scheme in ("http", "https"):
            return reference
        if scheme in CLOUD_SCHEMES:
            if task_id is None:
                raise ImageError(f"{reference} is cloud storage and needs a task id")
            if not connection.url:
                raise ImageError(
                    f"{reference} must be resolved through Label Studio; set"
                    " LABEL_STUDIO_URL"
                )
            encoded = base64.urlsafe_b64encode(reference.encode("utf-8")).decode()
            return connection.absolute(
                f"/tasks/{int(task_id)}/resolve/?fileuri={encoded}"
            )
        if reference.startswith(("upload/", "data/")):
            reference = (
                "/data/" if reference.startswith("upload/") else "/"
            ) + reference
        if reference.startswith("/"):
            if not connection.url:
                raise ImageError(
                    f"{reference} is a Label Studio file and LABEL_STUDIO_URL is"
                    " not set (nor did Label Studio send its hostname to /setup)"
                )
            return connection.absolute(reference)
        raise ImageError(f"{reference!r} is not a URL this backend can fetch")

    def _cache_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self._cache_dir / digest[:2] / digest

    def _download(self, reference: str, task_id: int | None) -> Path:
        url = self._resolve(reference, task_id)
        cached = self._cache_path(url)
        if cached.is_file():
            return cached
        data = self._fetch(url)
        cached.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cached.parent, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, cached)
        return cached

    def _fetch(self, url: str) -> bytes:
        connection = self._connection()
        retried_auth = False
        for _ in range(_MAX_REDIRECTS + 1):
            headers = connection.auth_header() if connection.owns(url) else {}
            try:
                response = self._session.get(
                    url,
                    headers=headers,
                    stream=True,
                    timeout=self._timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise ImageError(f"could not download {url}: {exc}") from None
            with response:
                if response.is_redirect and "location" in response.headers:
                    url = requests.compat.urljoin(url, response.headers["location"])
                    continue
                if response.status_code == 401 and headers and not retried_auth:
                    connection.forget_access_token()
                    retried_auth = True
                    continue
                if response.status_code != 200:
                    hint = (
                        "; check LABEL_STUDIO_API_KEY"
                        if response.status_code in (401, 403) and connection.owns(url)
                        else ""
                    )
                    raise ImageError(
                        f"downloading {url} answered HTTP {response.status_code}{hint}"
                    )
                return self._read_limited(response, url)
        raise ImageError(f"{url} redirected more than {_MAX_REDIRECTS} times")

    def _read_limited(self, response: requests.Response, url: str) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise ImageError(
                f"{url} is {int(declared)} bytes, over IMAGE_MAX_BYTES"
                f" ({self._max_bytes})"
            )
        buffer = io.BytesIO()
        try:
            for chunk in response.iter_content(64 * 1024):
                buffer.write(chunk)
                if buffer.tell() > self._max_bytes:
                    raise ImageError(
                        f"{url} is over IMAGE_MAX_BYTES ({self._max_bytes} bytes)"
                    )
        except requests.RequestException as exc:
            raise ImageError(f"downloading {url} failed: {exc}") from None
        return buffer.getvalue()
