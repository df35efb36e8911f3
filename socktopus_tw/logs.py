# -*- test-case-name: tests.test_logs -*-
"""
Log observers for twistd's C{--logger} option.

C{twistd -n --logger socktopus_tw.logs.text socktopus} writes the same lines
as twistd's default, cheaper: the timestamp is formatted once a second and
lines written in one go per reactor turn, where the default flushes every
line with its own system call. The daemon logs a line per /send batch, so on
a busy relay that is a large share of its CPU.

C{twistd -n --logger socktopus_tw.logs.json socktopus} writes one JSON object
per line (Twisted's own event format: C{log_format}, C{log_level},
C{log_namespace}, C{log_time} and the event's fields such as C{app} and
C{connectionId}), ready for journald, Loki or jq.
"""

from __future__ import annotations

import atexit
import sys
import threading
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
)
from twisted.python.threadable import isInIOThread
from zope.interface import implementer


def json() -> ILogObserver:
    """
    JSON lines on standard output.
    """
    return jsonFileLogObserver(sys.stdout)


def text() -> ILogObserver:
    """
    twistd's text lines on standard output, written in batches.
    """
    return BatchingTextObserver(sys.stdout)


@implementer(ILogObserver)
class BatchingTextObserver:
    """
    Formats events as twistd does and writes them once per reactor turn.

    Events from other threads (adbapi's, the bcrypt pool's) are queued the
    same way: the list is guarded by a lock and the flush is scheduled with
    C{callFromThread}, which is safe from any thread; from the reactor's own
    thread with C{callLater(0)}, which needs no wake-up system call. Before
    the reactor runs and after it stops, lines are written at once.
    """

    def __init__(self, out: IO[str], reactor: Any = None) -> None:
        self.out = out
        self._reactor = reactor
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._cached: tuple[int, str] = (-1, "")
        self._hooked = False

    def _time(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        # One tuple, read and replaced whole: events come from several threads.
        cached = self._cached
        if cached[0] != second:
            cached = self._cached = (second, formatTime(second))
        return cached[1]

    def format(self, event: LogEvent) -> str | None:
        """
        The event as twistd's default observer writes it.

        The common event (a format string of plain fields, from a
        L{twisted.logger.Logger}) is formatted with C{str.format_map}, which
        gives the same text as Twisted's formatter for such fields at a
        fraction of its cost; anything else (a failure, a C{"{f()}"} call,
        a legacy event with C{log_system}, a formatting error) goes to
        Twisted's own L{formatEventAsClassicLogText}.
        """
        template = event.get("log_format")
        if (
            type(template) is not str
            or "()" in template
            or "log_failure" in event
            or "log_flattened" in event
            or "log_system" in event
        ):
            return formatEventAsClassicLogText(event, formatTime=self._time)
        try:
            text = template.format_map(event)
        except Exception:
            return formatEventAsClassicLogText(event, formatTime=self._time)
        if not text:
            return None
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        line = f"{self._time(event.get('log_time'))} [{system}] {text}"
        if "\n" in line:
            line = line.replace("\n", "\n\t")
        return line + "\n"

    def __call__(self, event: LogEvent) -> None:
        text = self.format(event)
        if not text:
            return
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        if not self._hooked:
            # The first event comes from twistd's own start-up, on the main
            # thread: make sure nothing queued is lost when the reactor stops.
            self._hooked = True
            reactor.addSystemEventTrigger("after", "shutdown", self.flush)
            atexit.register(self.flush)
        if not reactor.running:
            self.flush()
            self._write(text)
            return
        with self._lock:
            self._lines.append(text)
            first = len(self._lines) == 1
        if first:
            if isInIOThread():
                # No wake-up needed (callFromThread would write to the
                # reactor's waker pipe): the flush runs next reactor turn.
                reactor.callLater(0, self.flush)
            else:
                reactor.callFromThread(self.flush)

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            self._write("".join(lines))

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
