"""
A throwaway C{redis-server} for the cluster tests, one per test.

It listens on a unix socket in the test's directory (and, for the tests that
need an address, on a free TCP port of 127.0.0.1), keeps nothing on disk, and
is stopped when the test ends. C{stop()} / C{start()} (the same socket and
port, empty again, as a restarted Redis without persistence) and
C{freeze()} / C{thaw()} (C{SIGSTOP} / C{SIGCONT}) make the faults.

Debian's C{redis-server} package must be installed; without it the tests
fail, saying so. They never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Any

INSTALL_HINT = (
    "the cluster tests need Redis: install Debian's redis-server package "
    "(apt-get install redis-server), which provides /usr/bin/redis-server"
)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """
    One C{redis-server} for one test.
    """

    def __init__(self, testCase: Any, tcp: bool = False, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            testCase.fail(INSTALL_HINT)
        # A unix socket path is at most 107 bytes, shorter than trial's
        # temporary directories: a short one of its own.
        self.directory = tempfile.mkdtemp(prefix="redis-")
        testCase.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.socket = os.path.join(self.directory, "r.sock")
        self.port = freePort() if tcp else 0
        self.password = password
        self.process: subprocess.Popen | None = None
        self.start()
        testCase.addCleanup(self.stop)

    @property
    def url(self) -> str:
        return f"redis+unix://{self.socket}"

    @property
    def tcpUrl(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """
        Start (again, empty), and return once it accepts connections.
        """
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                self.socket,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--loglevel",
                "notice",
                "--daemonize",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Redis says when it is ready: read its log until then (no sleep).
        seen = []
        for line in self.process.stdout:
            seen.append(line)
            if "ready to accept connections" in line.lower():
                break
        else:
            raise RuntimeError("redis-server did not start:\n" + "".join(seen[-10:]))
        # Its later log lines are not read: let them go nowhere.
        self.process.stdout.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.kill()
            self.process.wait()
        self.process = None
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def freeze(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def command(self, *words: str) -> bytes:
        """
        One command, answered raw (a test peeking at the cluster's keys).
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.socket)
            encoded = [w.encode() for w in words]
            s.sendall(
                b"*%d\r\n" % len(encoded)
                + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)
            )
            return s.recv(1 << 20)
