"""
Tests for L{socktopus_tw.logs.json}: one flat JSON object a line, as log
aggregators read them, from the observer itself and from a real daemon.
"""

from __future__ import annotations

import io
import json
import re
import sys
from datetime import UTC, datetime

import treq
from twisted.logger import Logger, LogLevel
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw import logs
from socktopus_tw.logs import BatchingJsonObserver, formatEventAsJson
from tests.support.daemon import APP, SECRET
from tests.support.process import TWISTD, run

#: 2023-11-14T22:13:20.250Z
WHEN = 1700000000.25
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class StoppedReactor:
    """
    Just enough reactor for an observer used before the reactor runs: it
    writes each line at once.
    """

    running = False

    def addSystemEventTrigger(self, *arguments: object) -> None:
        pass


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class FormatTests(SynchronousTestCase):
    """
    L{formatEventAsJson} on events as L{Logger} and L{twisted.python.log} make them.
    """

    def record(self, event: dict) -> dict:
        line = formatEventAsJson(event)
        self.assertTrue(line.endswith("\n"), line)
        self.assertEqual(line.count("\n"), 1, line)
        return json.loads(line)

    def event(self, format: str, **fields: object) -> dict:
        """
        An event as L{Logger.emit} makes it, without emitting it.
        """
        events: list[dict] = []
        logger = Logger(namespace="socktopus_tw.relay.api", observer=events.append)
        logger.emit(fields.pop("level", LogLevel.info), format, **fields)
        events[0]["log_time"] = WHEN
        return events[0]

    def test_flatObject(self) -> None:
        """
        The per-batch line: ISO 8601 UTC time, level, rendered message, logger,
        then the event's own fields, and no Twisted-private key.
        """
        record = self.record(
            self.event(
                "Sent {succeeded} messages for {app}, {failed} failed",
                app="demo",
                succeeded=3,
                failed=1,
            )
        )
        self.assertEqual(
            record,
            {
                "time": "2023-11-14T22:13:20.250Z",
                "level": "info",
                "message": "Sent 3 messages for demo, 1 failed",
                "logger": "socktopus_tw.relay.api",
                "app": "demo",
                "succeeded": 3,
                "failed": 1,
            },
        )
        self.assertEqual(list(record)[:4], ["time", "level", "message", "logger"])

    def test_timeIsUtc(self) -> None:
        """
        The time is the event's, in UTC, to the millisecond.
        """
        for when in [0.0, 1700000000.9999, 1700000000.9999999, 1893456000.001]:
            event = self.event("x")
            event["log_time"] = when
            text = self.record(event)["time"]
            self.assertRegex(text, ISO)
            parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            # Cut to the millisecond (after rounding to the microsecond):
            # never later than the event, so never in the next second.
            self.assertTrue(-1e-6 < when - parsed.timestamp() < 0.001, (text, when))
            # The observer's cached second gives the same text.
            self.assertEqual(BatchingJsonObserver(io.StringIO())._isoTime(when), text)

    def test_levels(self) -> None:
        """
        Every level by its name.
        """
        for level in LogLevel.iterconstants():
            self.assertEqual(self.record(self.event("x", level=level))["level"], level.name)

    def test_failureHasItsTraceback(self) -> None:
        """
        A failure's traceback is one string; the message stays the format's text.
        """
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            failure = Failure()
        event = self.event("Handler failed for {app}", app="demo", level=LogLevel.critical)
        event["log_failure"] = failure
        record = self.record(event)
        self.assertEqual(record["message"], "Handler failed for demo")
        self.assertIn("Traceback", record["traceback"])
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertNotIn("log_failure", record)

    def test_legacyEvents(self) -> None:
        """
        An event of Twisted's older API (twisted.web's access lines, log.err)
        has its text, its system, its level and its traceback, not the
        legacy plumbing.
        """
        seen: list[dict] = []
        legacyLog.addObserver(seen.append)
        self.addCleanup(legacyLog.removeObserver, seen.append)
        legacyLog.msg("GET / 200", system="HTTPChannel,0,127.0.0.1")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            legacyLog.err(None, "Unhandled error in a handler")
        self.flushLoggedErrors(ZeroDivisionError)
        plain, error = (self.record(e) for e in seen[-2:])
        self.assertEqual(
            {k: plain[k] for k in ["message", "system", "level"]},
            {"message": "GET / 200", "system": "HTTPChannel,0,127.0.0.1", "level": "info"},
        )
        self.assertEqual(error["message"], "Unhandled error in a handler")
        self.assertEqual(error["level"], "critical")
        self.assertIn("ZeroDivisionError", error["traceback"])
        for record in (plain, error):
            self.assertEqual(set(record) & {"isError", "why", "failure", "format"}, set())
            self.assertRegex(record["time"], ISO)

    def test_fieldsDoNotReplaceTheKeys(self) -> None:
        """
        A field named like a key of the line cannot replace it.
        """
        record = self.record(self.event("real", message="forged", level=LogLevel.warn))
        self.assertEqual((record["message"], record["level"]), ("real", "warn"))
        record = self.record(self.event("x", time="forged", logger="forged", traceback="forged"))
        self.assertRegex(record["time"], ISO)
        self.assertEqual(record["logger"], "socktopus_tw.relay.api")
        self.assertNotIn("traceback", record)

    def test_anythingIsWritten(self) -> None:
        """
        Values JSON cannot hold are written as their repr; nothing raises.
        """
        loop: dict = {}
        loop["self"] = loop
        record = self.record(
            self.event(
                "odd {peer}",
                peer=object(),
                raw=b"\xff\x00",
                ids={"c1"},
                big=2**80,
                surrogate="\udc80",
                keys={1: "one", None: "none"},
                loop=loop,
                broken=Unprintable(),
            )
        )
        self.assertTrue(record["message"].startswith("odd <object object at"))
        self.assertEqual(record["raw"], repr(b"\xff\x00"))
        self.assertEqual(record["ids"], ["c1"])
        self.assertEqual(record["big"], str(2**80))
        self.assertEqual(record["surrogate"], repr("\udc80"))
        self.assertEqual(record["keys"], {"1": "one", "null": "none"})
        self.assertIsInstance(record["loop"], str)
        self.assertIn("Unprintable", record["broken"])

    def test_unformattableEvent(self) -> None:
        """
        A format that cannot be rendered still gives a line saying so.
        """
        record = self.record(self.event("{missing} and {app}", app="demo"))
        self.assertIn("Unable to format event", record["message"])
        self.assertEqual(record["app"], "demo")

    def test_observerWritesLines(self) -> None:
        """
        logs.json() is the batching observer on stdout, writing these lines.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        observer = logs.json()
        self.assertIsInstance(observer, BatchingJsonObserver)
        observer._reactor = StoppedReactor()
        logger = Logger(namespace="socktopus_tw.relay.registry", observer=observer)
        logger.info("Connected {app}/{connectionId}", app="demo", connectionId="c1")
        logger.warn("Slow {app}", app="demo")
        first, second = (json.loads(line) for line in out.getvalue().splitlines())
        self.assertEqual(
            (first["message"], first["connectionId"], second["level"]),
            ("Connected demo/c1", "c1", "warn"),
        )
        self.assertRegex(first["time"], ISO)


class DaemonJsonLogTests(TestCase):
    """
    twistd -n --logger socktopus_tw.logs.json socktopus: every line of its
    output is a flat object.
    """

    timeout = 60

    async def test_everyLineIsFlatJson(self) -> None:
        """
        Start-up, a /send and shutdown, as an aggregator receives them.
        """
        process = run(
            self,
            TWISTD,
            "-n",
            "--pidfile=",
            "--logger",
            "socktopus_tw.logs.json",
            "socktopus",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            env={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET},
        )
        match = await process.waitFor(rb'"message":"Listening on 127\.0\.0\.1:(\d+)')
        url = f"http://127.0.0.1:{int(match.group(1))}/send"
        body = {
            "secretName": APP,
            "secret": SECRET,
            "messages": [{"recipient": "c1", "content": "x"}],
        }
        response = await treq.post(url, json=body, persistent=False)
        self.assertEqual(response.code, 200)
        await response.content()
        # Summed per app every 10 s, and at shutdown.
        process.transport.signalProcess("TERM")
        self.assertEqual(await process.ended, 0)

        records = [json.loads(line) for line in process.output.decode().splitlines()]
        for record in records:
            self.assertEqual(list(record)[:4], ["time", "level", "message", "logger"], record)
            self.assertRegex(record["time"], ISO)
            self.assertEqual([key for key in record if key.startswith(("log_", "__"))], [])
        listening = next(r for r in records if r["message"].startswith("Listening on"))
        self.assertEqual(listening["logger"], "socktopus_tw.daemon.Listener")
        self.assertEqual(listening["endpoint"], "tcp:0:interface=127.0.0.1")
        sent = next(r for r in records if r["message"].startswith("Sent 1 messages"))
        self.assertEqual(
            (sent["app"], sent["requests"], sent["messages"], sent["failed"]), (APP, 1, 1, 1)
        )
        self.assertIn("Socktopus stopping", [r["message"] for r in records])
