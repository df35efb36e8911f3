"""
The log observers offered for twistd's --logger.
"""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw import logs
from socktopus_tw.logs import BatchingTextObserver


class FakeReactor:
    """
    Just what the observer asks of a reactor: whether it runs, and a queue
    of calls scheduled from any thread.
    """

    def __init__(self, running: bool) -> None:
        self.running = running
        self.calls = []
        self.later = []

        self.triggers = []

    def callFromThread(self, f, *args):
        self.calls.append((f, args))

    def callLater(self, delay, f, *args):
        self.later.append((delay, f, args))

    def addSystemEventTrigger(self, phase, event, f):
        self.triggers.append((phase, event, f))

    def runCalls(self):
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


def event(text: str, when: float = 1700000000.5, **fields) -> dict:
    return {
        "log_format": text,
        "log_time": when,
        "log_level": LogLevel.info,
        "log_namespace": "socktopus_tw.test",
        **fields,
    }


class BatchingTextObserverTests(SynchronousTestCase):
    def test_linesMatchTwistdsFormat(self):
        """
        Switching to the cheaper observer changes nothing in what operators read.
        """
        out = io.StringIO()
        observer = BatchingTextObserver(out, FakeReactor(running=False))
        observer(event("Connected {app}/{connectionId}", app="demo", connectionId="c1"))
        self.assertRegex(
            out.getvalue(),
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[socktopus_tw\.test#info\] "
            r"Connected demo/c1\n$",
        )

    def test_linesFromOtherThreads(self):
        """
        Lines logged in other threads (the database's, bcrypt's) while the
        reactor runs leave in one write on its next turn, in order.
        """
        out = io.StringIO()
        reactor = FakeReactor(running=True)
        observer = BatchingTextObserver(out, reactor)
        self.patch(logs, "isInIOThread", lambda: False)
        for n in range(3):
            observer(event(f"line {n}"))
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(len(reactor.calls), 1)  # one flush scheduled, not three
        reactor.runCalls()
        self.assertEqual(
            [line.split("] ")[1] for line in out.getvalue().splitlines()],
            ["line 0", "line 1", "line 2"],
        )
        observer(event("line 3"))
        self.assertEqual(len(reactor.calls), 1)
        # Whatever is queued when the reactor stops is written then.
        [(phase, name, flush)] = reactor.triggers
        self.assertEqual((phase, name), ("after", "shutdown"))
        flush()
        self.assertTrue(out.getvalue().endswith("line 3\n"))

    def test_reactorThreadLinesAreWrittenTogether(self):
        """
        Lines logged on the reactor's thread leave together, one write at most
        a tenth of a second after the first of them, scheduled with callLater:
        callFromThread would write to the reactor's waker pipe each time.
        """
        out = io.StringIO()
        reactor = FakeReactor(running=True)
        observer = BatchingTextObserver(out, reactor)
        self.patch(logs, "isInIOThread", lambda: True)
        observer(event("one"))
        observer(event("two"))
        self.assertEqual((reactor.calls, out.getvalue()), ([], ""))
        [(delay, flush, args)] = reactor.later
        self.assertEqual(delay, 0.1)
        flush(*args)
        self.assertEqual(
            [line.split("] ")[1] for line in out.getvalue().splitlines()], ["one", "two"]
        )

    def test_warningsAndFailuresAreWrittenAtOnce(self):
        """
        A warning, an error or a failure is not held back: it is written at
        once, after the lines queued before it.
        """
        self.patch(logs, "isInIOThread", lambda: True)
        for urgent in [
            event("careful", log_level=LogLevel.warn),
            event("broken", log_level=LogLevel.error),
            event("crashed", log_level=LogLevel.critical),
            event("failed", log_failure=Failure(ZeroDivisionError())),
        ]:
            out = io.StringIO()
            observer = BatchingTextObserver(out, FakeReactor(running=True))
            observer(event("before"))
            observer(urgent)
            lines = [line for line in out.getvalue().splitlines() if "] " in line]
            self.assertEqual(
                [line.split("] ")[1] for line in lines], ["before", urgent["log_format"]]
            )

    def test_aFullQueueIsWrittenAtOnce(self):
        """
        However fast lines come, no more than about 64 KiB of them wait.
        """
        self.patch(logs, "isInIOThread", lambda: True)
        out = io.StringIO()
        observer = BatchingTextObserver(out, FakeReactor(running=True))
        line = "x" * 1000
        for _ in range(70):
            observer(event(line))
        self.assertGreater(len(out.getvalue()), 60000)
        self.assertLessEqual(sum(map(len, observer._lines)), 65536)

    def test_timestampFollowsTheClock(self):
        """
        The cached timestamp changes with the second, so log times stay right.
        """
        out = io.StringIO()
        observer = BatchingTextObserver(out, FakeReactor(running=False))
        observer(event("a", when=1700000000.1))
        observer(event("b", when=1700000000.9))
        observer(event("c", when=1700000001.0))
        stamps = [line.split(" ")[0] for line in out.getvalue().splitlines()]
        self.assertEqual(stamps[0], stamps[1])
        self.assertNotEqual(stamps[1], stamps[2])

    def test_loggerEventsReachIt(self):
        """
        Events from twisted.logger Loggers are written like any other.
        """
        out = io.StringIO()
        observer = BatchingTextObserver(out, FakeReactor(running=False))
        Logger(namespace="socktopus_tw.relay", observer=observer).info("Sent {n} messages", n=3)
        self.assertIn("[socktopus_tw.relay#info] Sent 3 messages", out.getvalue())

    def test_sameTextAsTwisted(self):
        """
        Its own formatting of common events gives, byte for byte, what
        Twisted's formatter gives for every kind of event.
        """

        class Unformattable:
            def __format__(self, spec):
                raise ValueError("no")

        class Thing:
            name = "thing"

            def __repr__(self):
                return "<Thing>"

            def call(self):
                return "called"

        failure = Failure(ZeroDivisionError("boom"))
        events = [
            event(
                "Sent {succeeded} messages for {app}, {failed} failed",
                succeeded=3,
                failed=0,
                app="demo",
            ),
            event(
                "Refused {path} for app {app!r}: {why}",
                path="/send",
                app="ü'x",
                why="Invalid secret",
            ),
            event(
                "attribute {thing.name}, index {items[1]}, spec {n:>5}, repr {thing!r}",
                thing=Thing(),
                items=["a", "b"],
                n=7,
            ),
            event("a call {thing.call()}", thing=Thing()),
            event("missing {nothere}"),
            event("unformattable {x}", x=Unformattable()),
            event("escaped {{braces}} and {n}", n=1),
            event("two\nlines {n}", n="and\nmore"),
            event(""),
            event("with a system", log_system="legacy"),
            event("a failure", log_failure=failure),
            event(b"bytes format {n}", n=1),
            event("no level {n}", n=1, log_level=None),
            {"log_format": "no namespace", "log_time": 1700000000.5},
            {"log_format": "no time", "log_namespace": "x", "log_level": LogLevel.warn},
            {"log_time": 1700000000.5, "message": ("legacy",)},
        ]
        observer = BatchingTextObserver(io.StringIO(), FakeReactor(running=False))
        for e in events:
            self.assertEqual(
                observer.format(e),
                formatEventAsClassicLogText(e, formatTime=observer._time),
                e.get("log_format"),
            )


class JsonObserverTests(SynchronousTestCase):
    def test_oneObjectPerLine(self):
        """
        Log shippers get one JSON object per line with the event's fields.
        """
        out = io.StringIO()
        self.patch(logs.sys, "stdout", out)
        Logger(namespace="socktopus_tw.relay", observer=logs.json()).info(
            "Connected {app}/{connectionId}", app="demo", connectionId="c1"
        )
        record = json.loads(out.getvalue().strip("\x1e\n"))
        self.assertEqual((record["app"], record["connectionId"]), ("demo", "c1"))


class LevelTests(SynchronousTestCase):
    """
    The observers write lines of C{--log-level} and above: info unless
    asked, so the line logged per /send batch (debug) is not written.
    """

    def setUp(self):
        self.addCleanup(logs.setLevel, LogLevel.info)
        self.out = io.StringIO()
        self.observer = BatchingTextObserver(self.out, FakeReactor(running=False))

    def logged(self) -> list[str]:
        for level in logs.LEVELS:
            self.observer(event(level.name, log_level=level))
        return [line.rsplit(" ", 1)[1] for line in self.out.getvalue().splitlines()]

    def test_infoAndAboveByDefault(self):
        self.assertEqual(self.logged(), ["info", "warn", "error", "critical"])

    def test_debugWhenAsked(self):
        logs.setLevel(LogLevel.debug)
        self.assertEqual(self.logged(), ["debug", "info", "warn", "error", "critical"])

    def test_warningsOnly(self):
        logs.setLevel(LogLevel.warn)
        self.assertEqual(self.logged(), ["warn", "error", "critical"])

    def test_jsonToo(self):
        out = io.StringIO()
        self.patch(logs.sys, "stdout", out)
        log = Logger(namespace="socktopus_tw.relay", observer=logs.json())
        log.debug("hidden")
        log.info("shown")
        self.assertEqual(
            [json.loads(line)["message"] for line in out.getvalue().split()], ["shown"]
        )


class DefaultObserverTests(SynchronousTestCase):
    """
    The observer a daemon gets from twistd when given none: the cheap text
    one on standard output; twistd's own wherever it was asked for more.
    """

    def test_foregroundOnStandardOutput(self):
        for twistd in ({"nodaemon": True}, {"nodaemon": True, "logfile": "-"}):
            self.assertIs(type(logs.defaultObserver(twistd)), BatchingTextObserver, twistd)

    def test_twistdsOwnAtTheLevel(self):
        """
        With a log file (or without -n), twistd's own observer writes,
        leaving out the lines below --log-level.
        """
        self.addCleanup(logs.setLevel, LogLevel.info)
        for twistd in (
            {"nodaemon": True, "logfile": self.mktemp()},
            {"nodaemon": False, "logfile": self.mktemp()},
        ):
            observer = logs.defaultObserver(twistd)
            for level in (LogLevel.debug, LogLevel.info):
                observer(event("a line at {level}", level=level.name, log_level=level))
            with open(twistd["logfile"]) as written:
                lines = written.read().splitlines()
            self.assertEqual([line.rsplit(" ", 1)[1] for line in lines], ["info"], twistd)

    def test_aLoggerChoiceStands(self):
        for twistd in (None, {"nodaemon": True, "logger": "socktopus_tw.logs.json"}):
            self.assertIsNone(logs.defaultObserver(twistd), twistd)
