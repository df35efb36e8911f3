# -*- test-case-name: tests.accounts.test_sessions,tests.accounts.test_faults -*-
"""
Session secrets: stored in the database, so a restart logs nobody out, and
cached in memory, so a signed request costs no query.

The cache is never wrong about a logout or a password change: both drop the
entry before the database is asked, and a load that started before a drop
is not cached.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from socktopus_tw.accounts import store
from socktopus_tw.db import Database, Unreachable

SHORT_LIFE = 30 * 60
LONG_LIFE = 7 * 24 * 60 * 60
#: A sliding expiry is written back once it has moved this many seconds.
WRITE_BACK_AFTER = 60


T = TypeVar("T")


@dataclass(slots=True)
class Session:
    userId: int
    secret: str
    expiresAt: int
    stayLoggedIn: bool
    registered: bool
    storedExpiresAt: int

    @property
    def expiration(self) -> str:
        """
        RFC 3339, UTC, as the original sent it.
        """
        return datetime.fromtimestamp(self.expiresAt, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def answer(self) -> dict[str, Any]:
        return {"Secret": self.secret, "UserID": self.userId, "Expiration": self.expiration}


def newSecret() -> str:
    """
    64 random bytes, standard base64.
    """
    return base64.b64encode(os.urandom(64)).decode("ascii")


class Sessions:
    """
    Live sessions by user id.
    """

    log = Logger()

    def __init__(self, database: Database, clock: IReactorTime) -> None:
        self.database = database
        self.clock = clock
        self._cache: dict[int, Session] = {}
        # Bumped by every logout and password change: a load that began
        # before one must not put what it read into the cache.
        self._epoch = 0
        self._opening: dict[int, DeferredLock] = {}

    def _now(self) -> int:
        return int(self.clock.seconds())

    def _life(self, stayLoggedIn: bool) -> int:
        return LONG_LIFE if stayLoggedIn else SHORT_LIFE

    async def find(self, userId: int) -> Session | None:
        """
        The user's live session, or None.
        """
        session = self._cache.get(userId)
        if session is None:
            epoch = self._epoch
            stored = await self.database.run(store.sessionOf, userId)
            if stored is None:
                return None
            session = Session(
                stored.userId,
                stored.secret,
                stored.expiresAt,
                stored.stayLoggedIn,
                stored.registered,
                stored.expiresAt,
            )
            if epoch == self._epoch:
                session = self._cache.setdefault(userId, session)
        if session.expiresAt <= self._now():
            self._cache.pop(userId, None)
            return None
        return session

    async def open(self, userId: int, registered: bool, stayLoggedIn: bool) -> Session:
        """
        Log in: the live session extended, or a new one.

        Logins of one user are taken one at a time: two at once would
        otherwise both make a new secret, and the first would die unseen.
        """
        lock = self._opening.setdefault(userId, DeferredLock())
        await lock.acquire()
        try:
            return await self._open(userId, registered, stayLoggedIn)
        finally:
            lock.release()
            # release() may have run the next login to completion already,
            # and that one may have removed (or replaced) the entry itself.
            if not lock.locked and not lock.waiting and self._opening.get(userId) is lock:
                del self._opening[userId]

    async def _open(self, userId: int, registered: bool, stayLoggedIn: bool) -> Session:
        session = await self.find(userId)
        if session is not None:
            if stayLoggedIn and not session.stayLoggedIn:
                session.stayLoggedIn = True
                session.storedExpiresAt = 0  # the upgrade must be stored now
            session.registered = registered
            await self.extend(session)
            return session
        expiresAt = self._now() + self._life(stayLoggedIn)
        secret = newSecret()
        epoch = self._epoch
        await self.database.run(store.saveSession, userId, secret, expiresAt, stayLoggedIn)
        session = Session(userId, secret, expiresAt, stayLoggedIn, registered, expiresAt)
        if epoch == self._epoch:
            # Not if a logout or password change ran meanwhile: it may have
            # deleted this very row.
            self._cache[userId] = session
        return session

    async def extend(self, session: Session) -> None:
        """
        Slide the expiry. The database is written when the expiry has moved
        far enough to matter, not on every request.

        A write-back the database does not answer is not the request's
        failure: the new expiry holds in memory and the next request writes
        it. Failing here would answer 503 to a request whose Auth Headers
        were recorded as used already, and the client could not send them
        again.
        """
        session.expiresAt = self._now() + self._life(session.stayLoggedIn)
        if session.expiresAt - session.storedExpiresAt >= WRITE_BACK_AFTER:
            expiresAt = session.expiresAt
            try:
                await self.database.run(
                    store.extendSession,
                    session.userId,
                    session.secret,
                    expiresAt,
                    session.stayLoggedIn,
                )
            except Unreachable:
                # The door logged the outage; storedExpiresAt still says
                # the row is behind.
                return
            session.storedExpiresAt = max(session.storedExpiresAt, expiresAt)

    async def close(self, userId: int) -> None:
        """
        Log out: the secret stops working at once.
        """
        await self.revoke(userId, self.database.run(store.endSession, userId))

    async def revoke(self, userId: int, change: Awaitable[T]) -> T:
        """
        Drop the user's cached session around C{change}, the database write
        that ends it, and return its result. Dropped before, so it stops
        working at once; and after, because with several database
        connections a read that began before the write committed may have
        cached the old row meanwhile.
        """
        self.forget(userId)
        try:
            return await change
        finally:
            self.forget(userId)

    def forget(self, userId: int) -> None:
        self._epoch += 1
        self._cache.pop(userId, None)

    def registered(self, userId: int) -> None:
        """
        The user completed registration: a cached session says so at once.
        """
        session = self._cache.get(userId)
        if session is not None:
            session.registered = True
