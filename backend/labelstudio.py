"""Where Label Studio is and how to authenticate to it (legacy token or PAT)."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

_REFRESH_MARGIN_SECONDS = 30.0


class LabelStudioAuthError(RuntimeError):
    """Label Studio refused the configured token."""


def _jwt_payload(token: str) -> dict | None:
    """The payload of a JSON Web Token, or None when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def origin(url: str) -> tuple[str, str]:
    """The scheme and host (with port) of a URL, lower-cased."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class LabelStudioConnection:
    """The address of one Label Studio and the token that opens it.

    Both token kinds work: a legacy token is sent as ``Token ...``; a Personal
    Access Token (a JWT refresh token, the default in Label Studio 1.23) is
    exchanged at ``/api/token/refresh/`` for short-lived access tokens, sent as
    ``Bearer ...`` and renewed before they expire.

    :param url: Label Studio's base URL, such as ``http://localhost:8080``.
    :param token: a legacy token or a Personal Access Token.
    :param timeout: seconds to wait for Label Studio when refreshing a token.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._is_pat = _jwt_payload(token) is not None
        self._access = ""
        self._access_expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        kind = "personal access token" if self._is_pat else "legacy token"
        return f"LabelStudioConnection({self.url!r}, {kind})"

    @property
    def token(self) -> str:
        """The configured token (never log it)."""
        return self._token

    @property
    def configured(self) -> bool:
        """Whether both the address and a token are known."""
        return bool(self.url and self._token)

    def owns(self, url: str) -> bool:
        """Whether ``url`` points at this Label Studio (and may get the token)."""
        return bool(self.url) and origin(url) == origin(self.url)

    def absolute(self, path_or_url: str) -> str:
        """Turn a Label Studio path such as ``/data/upload/1/x.jpg`` into a URL."""
        if "://" in path_or_url:
            return path_or_url
        return self.url + "/" + path_or_url.lstrip("/")

    def auth_header(self) -> dict[str, str]:
        """The ``Authorization`` header for a request to this Label Studio."""
        if not self._token:
            return {}
        if not self._is_pat:
            return {"Authorization": f"Token {self._token}"}
        with self._lock:
            if time.time() > self._access_expires - _REFRESH_MARGIN_SECONDS:
                self._refresh()
            return {"Authorization": f"Bearer {self._access}"}

    def forget_access_token(self) -> None:
        """Drop the cached access token, so the next request refreshes it."""
        with self._lock:
            self._access_expires = 0.0

    def _refresh(self) -> None:
        try:
            response = requests.post(
                self.url + "/api/token/refresh/",
                json={"refresh": self._token},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise LabelStudioAuthError(
                f"Could not reach Label Studio at {self.url} to refresh the"
                f" Personal Access Token: {exc}. Check LABEL_STUDIO_URL."
            ) from None
        if response.status_code != 200:
            raise LabelStudioAuthError(
                f"Label Studio at {self.url} refused the Personal Access Token"
                f" (HTTP {response.status_code}). Create a new token under Account"
                " & Settings and set it as LABEL_STUDIO_API_KEY."
            )
        self._access = response.json().get("access", "")
        payload = _jwt_payload(self._access) or {}
        self._access_expires = float(payload.get("exp", time.time() + 60))
        logger.debug("Refreshed the Label Studio access token")


class ConnectionRegistry:
    """The Label Studio connection of this backend.

    The settings win; when they name no Label Studio or no token, the
    ``hostname`` and ``access_token`` that Label Studio sent to ``/setup`` are
    used instead. Those are kept in a file readable only by this user, so that
    every server process and training job uses them, whichever process
    Label Studio's ``/setup`` reached.

    :param url: ``LABEL_STUDIO_URL``.
    :param token: ``LABEL_STUDIO_API_KEY``.
    :param timeout: seconds to wait for Label Studio when refreshing a token.
    :param state_file: where ``/setup``'s values are shared between processes.
    """

    def __init__(
        self,
        url: str = "",
        token: str = "",
        timeout: float = 10.0,
        state_file: Path | None = None,
    ) -> None:
        self._configured_url = url
        self._configured_token = token
        self._timeout = timeout
        self._state_file = state_file
        self._state_mtime = 0.0
        self._current = LabelStudioConnection(url, token, timeout=timeout)
        self._lock = threading.Lock()

    @property
    def _complete(self) -> bool:
        return bool(self._configured_url and self._configured_token)

    def get(self) -> LabelStudioConnection:
        """The connection to use now."""
        if not self._complete and self._state_file is not None:
            self._read_shared()
        return self._current

    def learn(self, hostname: str, access_token: str) -> LabelStudioConnection:
        """Fill what the settings leave open from a ``/setup`` request."""
        url = self._configured_url or (hostname or "").rstrip("/")
        token = self._configured_token or access_token or ""
        with self._lock:
            if self._use(url, token) and not self._complete:
                self._write_shared(url, token)
        return self._current

    def _use(self, url: str, token: str) -> bool:
        """Switch to ``url`` and ``token``; returns whether they changed."""
        if (url, token) == (self._current.url, self._current.token):
            return False
        self._current = LabelStudioConnection(url, token, timeout=self._timeout)
        logger.info("Label Studio is at %s", url or "(unknown)")
        return True

    def _write_shared(self, url: str, token: str) -> None:
        if self._state_file is None:
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._state_file.with_suffix(".tmp")
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(handle, "w") as out:
            json.dump({"url": url, "token": token}, out)
        os.replace(temporary, self._state_file)

    def _read_shared(self) -> None:
        try:
            mtime = self._state_file.stat().st_mtime
        except OSError:
            return
        if mtime == self._state_mtime:
            return
        with self._lock:
            try:
                shared = json.loads(self._state_file.read_text())
            except (OSError, ValueError):
                return
            self._state_mtime = mtime
            url = self._configured_url or shared.get("url", "")
            token = self._configured_token or shared.get("token", "")
            self._use(url, token)
