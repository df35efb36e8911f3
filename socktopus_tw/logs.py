# -*- test-case-name: tests.test_logs,tests.test_json_log -*-
"""
Log observers: the daemon's default, and those for twistd's C{--logger}.

C{twistd -n socktopus} with no C{--logger} writes with L{text} (see
L{defaultObserver}); with C{--logfile}, C{--syslog} or without C{-n},
twistd's own observer is kept. Lines below C{--log-level} (info unless
asked: a debug line is logged per C{/send} batch) are not written by these
observers nor by twistd's, and the daemon's own per-request debug lines are
not logged at all (L{shows}); a C{--logger} of another package writes what
it writes.

C{twistd -n --logger socktopus_tw.logs.text socktopus} writes the same lines
as twistd's default, cheaper: common events are formatted without Twisted's
pure-Python formatter, the timestamp once a second, and lines are written
together at most a tenth of a second after they were logged (warnings and
errors at once), where the default writes and flushes every line with its
own system call. The daemon logs a line per /send batch, so on a busy relay
that is a large share of its CPU.

C{twistd -n --logger socktopus_tw.logs.json socktopus} writes one flat JSON
object per line, as log shippers (Loki, Elasticsearch, Cloud Logging, jq)
expect them, in the same batches:

    {"time": "2026-01-05T12:34:56.789Z", "level": "info",
     "message": "Connected demo/c1", "logger": "socktopus_tw.relay.registry",
     "app": "demo", "connectionId": "c1"}

C{time} is ISO 8601 in UTC, C{level} one of C{debug}, C{info}, C{warn},
C{error}, C{critical}, C{message} the rendered text, C{logger} the event's
namespace; C{system} is there for events of Twisted's older logging API;
then come the event's own fields (C{app}, C{connectionId}, C{user}, ...), and
for a failure C{traceback}, the whole traceback as one string. A field named
like one of those keys is left out; a value JSON cannot hold is written as
its C{repr}.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogEvent,
    LogLevel,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

#: Levels written at once, not after the batching interval.
_URGENT = (LogLevel.warn, LogLevel.error, LogLevel.critical)

#: The levels, least first, as C{--log-level} names them.
LEVELS = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]

#: Levels these observers do not write (see L{setLevel}).
_hidden = frozenset({LogLevel.debug})


def setLevel(least: LogLevel) -> None:
    """
    Write lines of C{least} and above only, from now on (C{--log-level}).
    """
    global _hidden
    _hidden = frozenset(LEVELS[: LEVELS.index(least)])


def shows(level: LogLevel) -> bool:
    """
    Whether lines of C{level} are written: a line per request at debug
    level is not even made when they are not.
    """
    return level not in _hidden


def defaultObserver(twistd: Any) -> ILogObserver | None:
    """
    The observer for a daemon twistd starts with C{twistd} (its parsed
    options) when it was given no C{--logger}: with C{-n} and no
    C{--logfile} or C{--syslog}, L{text} on standard output, the same lines
    as twistd's default at a fraction of its cost (about 80 us a line);
    otherwise twistd's own (its log file, rotated on C{SIGUSR1}, or
    syslog), made as twistd makes it, with the lines below C{--log-level}
    left out. L{None} for a C{--logger}, whose choice stands.
    """
    if twistd is None or twistd.get("logger"):
        return None
    if twistd.get("nodaemon") and not twistd.get("syslog") and twistd.get("logfile") in (None, "-"):
        return text()
    from twisted.scripts._twistd_unix import UnixAppLogger

    observer = UnixAppLogger(twistd)._getLogObserver()
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)  # syslog's
    return FilteringLogObserver(observer, [_atLevel])


def _atLevel(event: LogEvent) -> PredicateResult:
    return PredicateResult.no if event.get("log_level") in _hidden else PredicateResult.maybe


def json() -> ILogObserver:
    """
    Flat JSON lines on standard output, written in batches.
    """
    return BatchingJsonObserver(sys.stdout)


def listForLog(items: list[str], limit: int = 10, width: int = 64) -> str:
    """
    Client-given strings (connection ids) for a log line: C{none} for none,
    at most C{limit} of them, each cut to C{width} characters and quoted
    with escapes when it holds anything a reader could mistake (a newline
    would forge a log line, a comma would split one id in two), then
    C{and N more}.
    """
    if not items:
        return "none"
    shown = []
    for item in items[:limit]:
        if len(item) > width:
            item = item[:width] + "..."
        if not item.isprintable() or "," in item or item.strip() != item or not item:
            item = repr(item)
        shown.append(item)
    text = ", ".join(shown)
    if len(items) > limit:
        text += f" and {len(items) - limit} more"
    return text


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
        if event.get("log_level") in _hidden:
            return
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


#: The keys of a JSON line; an event's field of the same name is left out.
_FIXED = frozenset(["time", "level", "message", "logger", "system", "traceback"])
#: What L{twisted.python.log} puts in its events besides the text.
_LEGACY = frozenset(["message", "time", "system", "isError", "format", "failure", "why"])
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
_REPR_LIMIT = 4096


def _fallback(value: Any) -> Any:
    """
    What orjson cannot write by itself: a set as a list, anything else as
    its (cut) C{repr}. Never raises: a log line must not be lost to a value.
    """
    if isinstance(value, (set, frozenset)):
        return list(value)
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} with a failing repr>"
    return text[:_REPR_LIMIT]


def _render(event: LogEvent) -> str:
    """
    The event's text. The common event (a format string of plain fields) is
    formatted with C{str.format_map}, as L{BatchingTextObserver.format} does;
    anything else by Twisted's L{formatEvent}, which never raises.
    """
    template = event.get("log_format")
    if type(template) is str and "()" not in template:
        try:
            return template.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


def formatEventAsJson(event: LogEvent, isoTime: Any = None) -> str:
    """
    One flat JSON object for C{event}, newline included; see the module's
    documentation for its keys.

    @param isoTime: turns a POSIX time into ISO 8601 text (default:
        L{isoformat}); L{BatchingJsonObserver} passes one that caches the
        second.
    """
    legacy = "isError" in event and type(event.get("message")) is tuple
    when = event.get("log_time")
    level = event.get("log_level")
    record: dict[Any, Any] = {
        "time": (isoTime or isoformat)(time.time() if when is None else when),
        "level": getattr(level, "name", None),
        "message": None,
        "logger": event.get("log_namespace"),
    }
    if "log_system" in event:
        record["system"] = event["log_system"]
    failure = event.get("log_failure")
    if failure is None and legacy:
        failure = event.get("failure")
    if legacy and failure is not None:
        # The legacy text is why, then the traceback: keep them apart.
        record["message"] = event.get("why") or "Unhandled Error"
    else:
        record["message"] = _render(event)
    skip = _FIXED | _LEGACY if legacy else _FIXED
    for key, value in event.items():
        if type(key) is str and not key.startswith("log_") and key not in skip:
            record[key] = value
    if isinstance(failure, Failure):
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = _fallback(failure)
    try:
        return orjson.dumps(record, default=_fallback, option=_OPTIONS).decode()
    except (TypeError, ValueError):
        # A value orjson refuses outright (an int over 64 bits, a string
        # with lone surrogates, nesting too deep): that field as its repr.
        safe = {}
        for key, value in record.items():
            try:
                orjson.dumps(value, default=_fallback, option=orjson.OPT_NON_STR_KEYS)
            except (TypeError, ValueError):
                value = _fallback(value)
            safe[key if type(key) is str else _fallback(key)] = value
        return orjson.dumps(safe, default=_fallback, option=_OPTIONS).decode()


def isoformat(when: float) -> str:
    """
    A POSIX time as ISO 8601 in UTC, to the millisecond: C{2026-01-05T12:34:56.789Z}.
    """
    second, microseconds = _split(when)
    return f"{_second(second)}.{microseconds // 1000:03d}Z"


def _split(when: float) -> tuple[int, int]:
    # Whole microseconds first, as datetime does: 0.001 is not 0.000999.
    return divmod(round(when * 1_000_000), 1_000_000)


def _second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@implementer(ILogObserver)
class BatchingJsonObserver(BatchingTextObserver):
    """
    L{formatEventAsJson} lines, written in batches as L{BatchingTextObserver}
    writes its lines.
    """

    def __init__(self, out: IO[str], reactor: Any = None) -> None:
        super().__init__(out, reactor)
        self._isoCached: tuple[int, str] = (-1, "")

    def _isoTime(self, when: float) -> str:
        second, microseconds = _split(when)
        # One tuple, read and replaced whole: events come from several threads.
        cached = self._isoCached
        if cached[0] != second:
            cached = self._isoCached = (second, _second(second))
        return f"{cached[1]}.{microseconds // 1000:03d}Z"

    def format(self, event: LogEvent) -> str | None:
        """
        The event as one flat JSON object and a newline.
        """
        return formatEventAsJson(event, self._isoTime)
