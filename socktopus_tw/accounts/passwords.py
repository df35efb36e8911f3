# -*- test-case-name: tests.accounts.test_passwords -*-
"""
bcrypt, off the reactor thread: a burst of logins never stalls WebSocket traffic.
"""

from __future__ import annotations

import os
from typing import Any

import bcrypt
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from socktopus_tw.accounts.rules import MAX_PASSWORD_BYTES


class Passwords(Service):
    """
    Hashes and checks passwords on a thread pool of its own, one thread per
    core: bcrypt releases the GIL, and more threads than cores only queue.
    """

    name = "passwords"

    def __init__(self, reactor: Any, rounds: int = 12, threads: int | None = None) -> None:
        self.reactor = reactor
        self.rounds = rounds
        self.pool = ThreadPool(minthreads=0, maxthreads=threads or os.cpu_count() or 2,
                               name="bcrypt")
        self._dummy: bytes | None = None

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()

    def hash(self, password: str) -> Deferred[bytes]:
        return deferToThreadPool(self.reactor, self.pool, self._hash, password)

    def check(self, password: str, hashed: bytes | None) -> Deferred[bool]:
        """
        Whether C{password} matches C{hashed}. With no hash (an unknown user)
        a dummy hash of the same cost is checked, so the answer takes as long
        as for a wrong password.
        """
        return deferToThreadPool(self.reactor, self.pool, self._check, password, hashed)

    def _hash(self, password: str) -> bytes:
        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(self.rounds))

    def _check(self, password: str, hashed: bytes | None) -> bool:
        encoded = password.encode("utf-8", "surrogatepass")
        if hashed is None or len(encoded) > MAX_PASSWORD_BYTES:
            # An unknown user, or a password no stored one can equal (never
            # cut: bcrypt would read only its first 72 bytes). Either costs
            # one full check, so timing tells nothing about the user name.
            if self._dummy is None:
                self._dummy = self._hash("not anybody's password")
            bcrypt.checkpw(encoded[:MAX_PASSWORD_BYTES], self._dummy)
            return False
        try:
            return bcrypt.checkpw(encoded, hashed)
        except ValueError:
            return False
