# -*- test-case-name: tests.accounts.test_throttle -*-
"""
Login throttling without lockouts (SPEC §8.1), after OWASP's authentication
cheat sheet: failed logins are counted per (user name, client IP) pair and
per client IP, in the database, so every daemon on it and a restarted one
see the same counts.

* A pair that failed L{PAIR_LIMIT} times in a row (each within L{WINDOW} of
  the last) waits before its next attempt: 1 s, doubling with each further
  failure, at most L{LONGEST_WAIT}. Only that pair waits: the user logs in
  at once from anywhere else, so an attacker cannot lock anyone out.
* An IP that failed L{IP_LIMIT} times in a row over any names (credential
  stuffing) waits L{LONGEST_WAIT} for every login.
* A refused attempt is answered without a bcrypt check, and a block this
  process knows of without a query either (L{LoginThrottle} keeps the blocks
  it saw), so a flood costs little more than its HTTP requests.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

from socktopus_tw.accounts import store
from socktopus_tw.db import Conflict, Database
from socktopus_tw.errors import AccountsError

#: Milliseconds after the last failure when a count starts again.
WINDOW = 15 * 60 * 1000
#: Failures in a row of one (user, IP) pair before it waits.
PAIR_LIMIT = 5
#: Failures in a row of one IP, over any user names, before it waits.
IP_LIMIT = 100
#: The longest wait, in milliseconds.
LONGEST_WAIT = 15 * 60 * 1000
#: How many blocks one process remembers (the oldest are forgotten first:
#: a forgotten block is asked of the database again).
REMEMBERED = 10_000


class TooManyAttempts(AccountsError):
    status = 429
    message = "Too many attempts"

    def __init__(self, retryAfter: int) -> None:
        super().__init__()
        #: Seconds before the next attempt may succeed.
        self.retryAfter = retryAfter

    def headers(self) -> dict[bytes, bytes]:
        return {b"retry-after": b"%d" % self.retryAfter}


def pairWait(failures: int) -> int:
    """
    Milliseconds a pair waits after C{failures} failures in a row.
    """
    if failures < PAIR_LIMIT:
        return 0
    return min(1000 << min(failures - PAIR_LIMIT, 20), LONGEST_WAIT)


def ipWait(failures: int) -> int:
    """
    Milliseconds an IP waits after C{failures} failures in a row.
    """
    return LONGEST_WAIT if failures >= IP_LIMIT else 0


class LoginThrottle:
    """
    The counts of failed logins, and the refusals they earn.

    A pair is a lower-cased user name and an IP; a name that cannot be a
    user's (see L{socktopus_tw.accounts.rules}) counts for its IP only.
    """

    def __init__(self, database: Database, clock: IReactorTime) -> None:
        self.database = database
        self.clock = clock
        # (name key or "", ip) -> blocked until, Unix milliseconds.
        self._blocks: OrderedDict[tuple[str, str], int] = OrderedDict()

    def _now(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _remember(self, key: tuple[str, str], until: int) -> None:
        self._blocks[key] = until
        self._blocks.move_to_end(key)
        while len(self._blocks) > REMEMBERED:
            self._blocks.popitem(last=False)

    def _refuse(self, until: int, now: int) -> None:
        raise TooManyAttempts(max(1, math.ceil((until - now) / 1000)))

    async def check(self, nameKey: str | None, ip: str) -> None:
        """
        Refuse an attempt of C{nameKey} (L{None}: no user's) from C{ip}
        with L{TooManyAttempts} while the pair or the IP waits.
        """
        now = self._now()
        name = nameKey or ""
        for key in ((name, ip), ("", ip)):
            until = self._blocks.get(key, 0)
            if until > now:
                self._refuse(until, now)
        until = await self.database.run(store.loginBlockedUntil, name, ip)
        if until > now:
            self._remember((name, ip), until)
            self._refuse(until, now)

    async def failed(self, nameKey: str | None, ip: str) -> bool:
        """
        Count a failed attempt; whether it made the pair wait.
        """
        now = self._now()
        pairBlocked = 0
        if nameKey is not None:
            _, pairBlocked = await self._count(nameKey, ip, now, pairWait)
            if pairBlocked:
                self._remember((nameKey, ip), pairBlocked)
        _, ipBlocked = await self._count("", ip, now, ipWait)
        if ipBlocked:
            self._remember(("", ip), ipBlocked)
        return pairBlocked > 0

    async def _count(self, nameKey: str, ip: str, now: int, wait) -> tuple[int, int]:
        try:
            return await self.database.run(store.countLoginFailure, nameKey, ip, now, WINDOW, wait)
        except Conflict:
            # Another daemon counted this pair's first failure meanwhile.
            return await self.database.run(store.countLoginFailure, nameKey, ip, now, WINDOW, wait)

    async def succeeded(self, nameKey: str, ip: str) -> None:
        """
        A correct password: the pair's count starts again.
        """
        self._blocks.pop((nameKey, ip), None)
        await self.database.run(store.clearLoginFailures, nameKey, ip)

    async def forgetOld(self) -> None:
        """
        Drop the counts that would start again anyway.
        """
        now = self._now()
        await self.database.run(store.forgetLoginFailures, now - WINDOW, now)
