# -*- test-case-name: tests.accounts.test_audit -*-
"""
The accounts service's periodic clean-up: audit events past retention (SPEC
§8.3) and failed-login counts that would start again anyway (§8.1).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from socktopus_tw.accounts.service import Accounts

log = Logger()


class Housekeeping(Service):
    """
    Calls L{Accounts.forgetOld} every C{interval} seconds, the first time
    C{first} seconds after start (not at once: the database is being opened
    then, and a daemon restarted in a loop need not sweep each time). Stop
    waits for a sweep under way.
    """

    name = "housekeeping"

    def __init__(
        self, accounts: Accounts, clock: IReactorTime, interval: float = 3600, first: float = 60
    ) -> None:
        self.accounts = accounts
        self.clock = clock
        self.interval = interval
        self.first = first
        self._next: IDelayedCall | None = None
        self._running: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        self._next = self.clock.callLater(self.first, self._sweep)

    def _sweep(self) -> None:
        self._next = None
        self._running = ensureDeferred(self.accounts.forgetOld())
        self._running.addErrback(
            lambda failure: log.warn(
                "Could not clean up the accounts tables: {error}", error=failure.value
            )
        )
        self._running.addBoth(self._swept)

    def _swept(self, ignored: object) -> None:
        self._running = None
        if self.running:
            self._next = self.clock.callLater(self.interval, self._sweep)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._next is not None:
            self._next.cancel()
            self._next = None
        return self._running if self._running is not None else succeed(None)
