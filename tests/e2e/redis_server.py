"""A throwaway ``redis-server`` on a free port of 127.0.0.1, for the queue tests."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from .labelstudio import ManagedProcess, ServerHandle, free_port


def redis_server_binary() -> Path:
    """Return the ``redis-server`` command to run.

    It is taken from the environment variable ``REDIS_SERVER_BIN`` or, when
    that is not set, from ``PATH``.

    :raises FileNotFoundError: if there is no such command.
    """
    configured = os.environ.get("REDIS_SERVER_BIN")
    found = configured or shutil.which("redis-server")
    if not found or not Path(found).is_file():
        where = f"at {configured} (REDIS_SERVER_BIN)" if configured else "on PATH"
        raise FileNotFoundError(
            f"The redis-server command was not found {where}. Run `make "
            "redis-server` to install the Debian package, or set REDIS_SERVER_BIN "
            "to the path of a redis-server binary."
        )
    return Path(found)


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ServerHandle):
    """A ``redis-server`` of its own: loopback only, no persistence, one port.

    Example::

        with RedisServer(tmp_path) as redis:
            env["REDIS_URL"] = redis.url

    :param workdir: folder for its working directory and its log.
    :param binary: the ``redis-server`` command; by default
        ``redis_server_binary()``.
    :param port: port to listen on; by default a free one.
    :param startup_timeout: seconds to wait for ``PING`` to be answered.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binary: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.binary = Path(binary) if binary else redis_server_binary()
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.data_dir = self.workdir / "redis-data"
        self.log_path = self.workdir / f"redis-{self.port}.log"
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The ``REDIS_URL`` of this server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """Return the command line: loopback, this port, nothing saved to disk."""
        return [
            str(self.binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def start(self) -> RedisServer:
        """Start the server and wait until it answers ``PING``.

        :raises StartupError: with the log tail, if it exits (a taken port, for
            one) or does not answer within ``startup_timeout`` seconds.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            self.command(),
            cwd=self.data_dir,
            env=dict(os.environ),
            log_path=self.log_path,
            name=f"redis-server on port {self.port}",
        )
        self._process.spawn()
        try:
            self._process.wait_until(
                lambda: _pong(self.port),
                timeout=self.startup_timeout,
                what=f"answering PING on 127.0.0.1:{self.port}",
                interval=0.1,
            )
        except BaseException:
            self.stop()
            raise
        return self
