# -*- test-case-name: tests.accounts.test_passwords,tests.accounts.test_faults -*-
"""
bcrypt, off the reactor thread: a burst of logins never stalls WebSocket traffic.

And the cost of a check, which must not tell who exists: after
C{--bcrypt-rounds} changes, stored hashes keep the cost they were made at
until their user logs in (and is rehashed at the current cost), so an
unknown user's check costs what most stored hashes cost (L{HashCosts}), not
the current cost.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import bcrypt
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from socktopus_tw.accounts.rules import MAX_PASSWORD_BYTES

#: What the dummy hash for unknown users is a hash of; it matches nothing,
#: because the dummy's check always answers no.
_DUMMY_PASSWORD = b"not anybody's password"


def costOf(hashed: bytes) -> int | None:
    """
    The bcrypt cost of a stored hash (12 for C{$2b$12$...}), or None if it
    is not a bcrypt hash.
    """
    parts = hashed.split(b"$", 3)
    if len(parts) < 4 or parts[0] or not parts[2].isdigit():
        return None
    return int(parts[2])


class HashCosts:
    """
    How many stored password hashes there are of each bcrypt cost: counted
    from the database now and then, and kept up to date in between with the
    hashes this daemon writes. Pure.
    """

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.known = False

    def counted(self, counts: Mapping[int, int]) -> None:
        """
        The database's count, as C{{cost: how many}}.
        """
        self._counts = Counter(counts)
        self.known = True

    def changed(self, old: bytes | None, new: bytes) -> None:
        """
        A stored hash C{old} (None for a new user) was replaced with C{new}.
        """
        if not self.known:
            return
        for hashed, step in ((old, -1), (new, 1)):
            cost = None if hashed is None else costOf(hashed)
            if cost is not None:
                self._counts[cost] += step

    def mostCommon(self, default: int) -> int:
        """
        The cost most stored hashes have (the higher one on a tie), or
        C{default} when nothing is known.
        """
        live = [(count, cost) for cost, count in self._counts.items() if count > 0]
        return max(live)[1] if live else default


class Passwords(Service):
    """
    Hashes and checks passwords on a thread pool of its own, one thread per
    core: bcrypt releases the GIL, and more threads than cores only queue.

    @ivar rounds: the cost new hashes are made at.
    @ivar dummyCost: the cost an unknown user's check costs (L{expectCost});
        None for L{rounds}.
    """

    name = "passwords"

    def __init__(self, reactor: Any, rounds: int = 12, threads: int | None = None) -> None:
        self.reactor = reactor
        self.rounds = rounds
        self.pool = ThreadPool(
            minthreads=0, maxthreads=threads or os.cpu_count() or 2, name="bcrypt"
        )
        self.dummyCost: int | None = None
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
        a dummy hash is checked, of the cost most stored hashes have, so the
        answer takes as long as for a wrong password.
        """
        return deferToThreadPool(self.reactor, self.pool, self._check, password, hashed)

    def needsRehash(self, hashed: bytes) -> bool:
        """
        Whether C{hashed} was made at another cost than L{rounds}: once its
        user logs in, it should be made again at the current cost (as
        Django and passlib do), so a changed C{--bcrypt-rounds} reaches
        every active user.
        """
        return costOf(hashed) != self.rounds

    def expectCost(self, cost: int) -> Deferred[None]:
        """
        From now on an unknown user's check costs C{cost}. Fires once the
        dummy hash of that cost is made (off the reactor thread), so no
        unknown user's check pays for making it.
        """
        self.dummyCost = cost
        if self._dummy is not None and costOf(self._dummy) == cost:
            return succeed(None)
        return deferToThreadPool(self.reactor, self.pool, self._dummyHash).addCallback(
            lambda _: None
        )

    def _hash(self, password: str) -> bytes:
        return self._hashAt(password.encode("utf-8"), self.rounds)

    def _hashAt(self, password: bytes, cost: int) -> bytes:
        return bcrypt.hashpw(password, bcrypt.gensalt(cost))

    def _dummyHash(self) -> bytes:
        # Two threads may both make one at a new cost; either will do.
        cost = self.dummyCost or self.rounds
        dummy = self._dummy
        if dummy is None or costOf(dummy) != cost:
            dummy = self._dummy = self._hashAt(_DUMMY_PASSWORD, cost)
        return dummy

    def _check(self, password: str, hashed: bytes | None) -> bool:
        encoded = password.encode("utf-8", "surrogatepass")
        if hashed is None:
            # An unknown user costs one full check of a stored hash's cost,
            # so timing tells nothing about the user name.
            bcrypt.checkpw(encoded[:MAX_PASSWORD_BYTES], self._dummyHash())
            return False
        if len(encoded) > MAX_PASSWORD_BYTES:
            # No stored password can equal it (never cut: bcrypt would read
            # only its first 72 bytes), but it costs what a wrong password
            # for this user costs: one check of the user's own hash, whose
            # answer is not used.
            try:
                bcrypt.checkpw(encoded[:MAX_PASSWORD_BYTES], hashed)
            except ValueError:
                pass
            return False
        try:
            return bcrypt.checkpw(encoded, hashed)
        except ValueError:
            return False
