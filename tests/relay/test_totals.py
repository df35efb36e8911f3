"""
L{SendTotals}: /send's log grows with the apps, not the traffic (SPEC §5).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.relay.totals import SendTotals


class SendTotalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.lines: list[dict] = []
        observer = self.lines.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.totals = SendTotals(self.clock)
        self.totals.startService()

    def said(self) -> list[tuple[str, int, int, int]]:
        return [
            (e["app"], e["requests"], e["messages"], e["failed"])
            for e in self.lines
            if e.get("log_namespace") == "socktopus_tw.relay.totals.SendTotals"
            and e["log_level"] == LogLevel.info
        ]

    def test_oneLinePerAppEveryTenSeconds(self) -> None:
        for _ in range(1000):
            self.totals.add("demo", 99, 1)
        self.totals.add("other", 5, 0)
        self.clock.advance(9.9)
        self.assertEqual(self.said(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.said(), [("demo", 1000, 100000, 1000), ("other", 1, 5, 0)])

    def test_quietAppsSayNothingAndNoTimerRuns(self) -> None:
        self.totals.add("demo", 1, 0)
        self.clock.advance(10)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(self.said(), [("demo", 1, 1, 0)])
        self.totals.add("demo", 0, 2)
        self.clock.advance(10)
        self.assertEqual(self.said(), [("demo", 1, 1, 0), ("demo", 1, 2, 2)])

    def test_stoppingSaysWhatIsLeft(self) -> None:
        self.totals.add("demo", 3, 1)
        self.totals.stopService()
        self.assertEqual(self.said(), [("demo", 1, 4, 1)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
