# -*- test-case-name: tests.test_logs -*-
"""
Log observers for twistd's C{--logger} option.

C{twistd -n --logger socktopus_tw.logs.text socktopus} writes the same lines
as twistd's default, cheaper: common events are formatted without Twisted's
pure-Python formatter, the timestamp once a second, and lines are written
together at most a tenth of a second after they were logged (warnings and
errors at once), where the default writes and flushes every line with its
own system call. The daemon logs a line per /send batch, so on a busy relay
that is a large share of its CPU.

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
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
)
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

#: Levels written at once, not after the batching interval.
_URGENT = (LogLevel.warn, LogLevel.error, LogLevel.critical)


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
    Formats events as twistd does and writes them in batches.

    A line logged on the reactor's thread is queued and written with those
    that follow it within C{interval} seconds: one write system call (and
    one wake-up of whatever reads the log, journald say) for all of them.
    A warning, an error or a failure is written at once, with the lines
    queued before it, and so is a queue over C{maxQueued} characters.
    Events from other threads (adbapi's, the bcrypt pool's) are written on
    the reactor's next turn, through C{callFromThread}; the queue is guarded
    by a lock. Before the reactor runs and when it stops, lines are written
    at once: only a process killed outright (C{SIGKILL}) can lose the last
    C{interval} of lines.
    """

    interval = 0.1
    maxQueued = 65536

    def __init__(self, out: IO[str], reactor: Any = None) -> None:
        self.out = out
        self._reactor = reactor
        self._lines: list[str] = []
        self._queued = 0
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
            self._queued += len(text)
            first = len(self._lines) == 1
            full = self._queued > self.maxQueued
        if not isInIOThread():
            if first:
                reactor.callFromThread(self.flush)
        elif full or event.get("log_level") in _URGENT or "log_failure" in event:
            self.flush()
        elif first:
            # callLater, not callFromThread: that writes to the reactor's
            # waker pipe, a system call more per flush.
            reactor.callLater(self.interval, self.flush)

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._queued = self._lines, [], 0
        if lines:
            self._write("".join(lines))

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
