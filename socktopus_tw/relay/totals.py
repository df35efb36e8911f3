# -*- test-case-name: tests.relay.test_totals -*-
"""
C{/send}'s log (SPEC §5): batches summed per app into one line every
L{SendTotals.interval} seconds, so the log grows with the number of apps,
not with traffic. Each batch still has a line of its own, at debug level.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger


class SendTotals(Service):
    """
    Requests, messages and failed messages per app since the last line.
    A timer runs only while there is something to say.
    """

    log = Logger()
    name = "send totals"
    interval = 10.0

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        # app -> [requests, messages, failed]
        self._sums: dict[str, list[int]] = {}
        self._due: IDelayedCall | None = None

    def add(self, app: str, succeeded: int, failed: int) -> None:
        """
        One batch answered.
        """
        sums = self._sums.get(app)
        if sums is None:
            sums = self._sums[app] = [0, 0, 0]
            if self._due is None and self.running:
                self._due = self.clock.callLater(self.interval, self.flush)
        sums[0] += 1
        sums[1] += succeeded + failed
        sums[2] += failed

    def flush(self) -> None:
        """
        Log one line per app that had batches, and start again.
        """
        if self._due is not None and self._due.active():
            self._due.cancel()
        self._due = None
        sums, self._sums = self._sums, {}
        for app in sorted(sums):
            requests, messages, failed = sums[app]
            self.log.info(
                "Sent {messages} messages for {app} in {requests} requests, {failed} failed",
                app=app,
                requests=requests,
                messages=messages,
                failed=failed,
            )

    def stopService(self) -> None:
        # The last sums are not lost at shutdown.
        super().stopService()
        self.flush()
