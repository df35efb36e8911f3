# -*- test-case-name: tests.relay.test_webhooks -*-
"""
Webhooks (SPEC §7.2): what an app's clients do, posted to its backend.

Each app with a webhook has one L{_Hook}: a queue of undelivered events
(already serialised) and at most one post in flight, so its events reach the
backend in the order they happened. The L{IEventSink} calls only append to
that queue and maybe arm a timer; everything slow happens later, on the
reactor, and nothing here can fail its caller.

Bounds: per app at most L{Webhooks.maxEvents} events (and
L{Webhooks.maxQueueBytes} bytes of them) are kept, in flight included; past
that the oldest go. A post carries at most L{Webhooks.maxBatch} events (and
about L{Webhooks.maxBatchBytes}); a receiver's answer is read only up to
L{Webhooks.maxAnswerBytes} and thrown away.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from hyperlink import URL
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

import socktopus_tw
from socktopus_tw.relay.events import IEventSink

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from socktopus_tw.metrics import Metrics

_LOOPBACK_NAMES = ("localhost",)
_VERSION = getattr(socktopus_tw, "__version__", None)
USER_AGENT = f"Socktopus/{_VERSION}" if _VERSION else "Socktopus"


def checkWebhookUrl(url: str) -> str | None:
    """
    Whether C{url} can be an app's webhook: C{None} if it can, else one
    sentence saying what is wrong, for a start-up error line.

    It must be C{https://} with a host, or plain C{http://} to a loopback
    address only (127.0.0.0/8, ::1, C{localhost}): events and their
    signatures must not cross a network in the clear. It must not hold a
    user name or password (they would end up in logs and error lines).
    """
    if not url or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "it must be one URL, without spaces or control characters."
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "it is not a valid URL (check its host and port)."
    if port == 0 or parts.netloc.endswith(":"):
        return "its port must be a number from 1 to 65535 (or left out)."
    if host and not _HOST.fullmatch(host):
        return "its host is not a host name or an IP address."
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        return "it must start with https:// (or http:// for a loopback address)."
    if "@" in parts.netloc:
        return "it must not hold a user name or password (the part before @)."
    if not host:
        return "it has no host."
    if scheme == "http" and not _isLoopback(host):
        return (
            "plain http:// is only allowed to a loopback address"
            " (127.0.0.0/8, ::1 or localhost); use https:// for any other host."
        )
    try:
        _encode(url)
    except Exception:
        return "it is not a valid URL."
    return None


#: What a host may be after urlsplit: a name (any letters: IDNA comes
#: later), an IPv4 address, or an IPv6 literal's inside.
_HOST = re.compile(r"[^\s%/?#@\[\]]+|[0-9a-f:.]+(%[\w.~-]+)?", re.IGNORECASE)


def _isLoopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _encode(url: str) -> bytes:
    """
    C{url} as the ASCII bytes an L{IAgent} takes (IDNA host, %-escapes).
    """
    try:
        return url.encode("ascii")
    except UnicodeEncodeError:
        # Not for an IPv6 literal (hyperlink would IDNA-encode it), which is
        # ASCII anyway.
        return URL.from_text(url).to_uri().to_text().encode("ascii")


def signature(secret: str, body: bytes, milliseconds: int) -> str:
    """
    The C{Socktopus-Signature} header of a post of C{body} at C{milliseconds}
    (Unix time): C{t=<ms>,v1=<hex HMAC_SHA256(key=secret, msg=b"<ms>." + body)>}.
    """
    stamp = str(milliseconds).encode("ascii")
    digest = hmac.new(secret.encode("utf-8"), stamp + b"." + body, hashlib.sha256).hexdigest()
    return f"t={milliseconds},v1={digest}"


@implementer(IEventSink)
class Webhooks(Service):
    """
    Posts the events of apps that have a webhook, in order, batched, retried
    and bounded as SPEC §7.2 says.

    @ivar batchDelay: seconds a batch waits for more events after its first.
    @ivar maxBatch: events in one post; this many waiting are sent at once.
    @ivar maxBatchBytes: a post carries no more serialised events than this
        (but always at least one); this many bytes waiting are sent at once.
    @ivar maxEvents: undelivered events kept per app, in flight included;
        past that the oldest are dropped.
    @ivar maxQueueBytes: the same bound on their serialised size, since an
        event's content may be as big as C{--max-message-size}.
    @ivar timeout: seconds for a whole post, the answer read included.
    @ivar firstBackoff: seconds before the first retry; doubled per failure
        up to C{maxBackoff}.
    @ivar expiry: seconds after a batch's first attempt after which it is
        dropped if still not delivered.
    @ivar maxAnswerBytes: of an answer's body, this much is read (and thrown
        away, letting the connection be reused); past it the connection is
        closed.
    @ivar shutdownTimeout: seconds L{stopService} keeps delivering.
    """

    log = Logger()
    name = "webhooks"

    batchDelay = 0.1
    maxBatch = 1000
    maxBatchBytes = 1024 * 1024
    maxEvents = 10_000
    maxQueueBytes = 64 * 1024 * 1024
    timeout = 10.0
    firstBackoff = 0.5
    maxBackoff = 30.0
    expiry = 600.0
    maxAnswerBytes = 64 * 1024
    shutdownTimeout = 5.0

    def __init__(
        self,
        urls: dict[str, str],
        secrets: Callable[[str], str],
        reactor: Any,
        metrics: Metrics | None = None,
        agent: IAgent | None = None,
    ) -> None:
        """
        @param urls: canonical (lower-case) app name -> its webhook URL, each
            accepted by L{checkWebhookUrl}.
        @param secrets: the secret of an app, which signs its posts.
        @param reactor: an L{IReactorTime} (and, without C{agent}, what an
            L{Agent} needs).
        @param agent: what posts; by default an L{Agent} with a persistent
            connection pool and verified HTTPS.
        """
        super().__init__()
        self.reactor = reactor
        self.metrics = metrics
        self.secrets = secrets
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(), pool=self._pool)
        self.agent = agent
        self._hooks: dict[str, _Hook] = {}
        for app, url in urls.items():
            problem = checkWebhookUrl(url)
            if problem is not None:
                raise ValueError(f"webhook of {app}: {problem}")
            self._hooks[app] = _Hook(self, app, _encode(url))
        if metrics is not None:
            metrics.watchWebhookQueues(self.queueLengths)

    # -- IEventSink ------------------------------------------------------

    def wants(self, app: str) -> bool:
        """
        Whether C{app} has a webhook.
        """
        return app in self._hooks

    def connected(self, app: str, connectionId: str) -> None:
        """
        Queue a C{connect} event, stamped now.
        """
        hook = self._hooks.get(app)
        if hook is not None:
            hook.add({"type": "connect", "connection": connectionId, "time": self._now()})

    def message(self, app: str, connectionId: str, content: str) -> None:
        """
        Queue a C{message} event, stamped now.
        """
        hook = self._hooks.get(app)
        if hook is not None:
            hook.add(
                {
                    "type": "message",
                    "connection": connectionId,
                    "time": self._now(),
                    "content": content,
                }
            )

    def disconnected(self, app: str, connectionId: str, reason: str) -> None:
        """
        Queue a C{disconnect} event, stamped now.
        """
        hook = self._hooks.get(app)
        if hook is not None:
            hook.add(
                {
                    "type": "disconnect",
                    "connection": connectionId,
                    "time": self._now(),
                    "reason": reason,
                }
            )

    def _now(self) -> int:
        return int(self.reactor.seconds() * 1000)

    # -- introspection ---------------------------------------------------

    def queueLengths(self) -> dict[str, int]:
        """
        Undelivered events per app (in flight included).
        """
        return {app: len(hook.events) for app, hook in self._hooks.items()}

    # -- lifecycle -------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """
        Post what is queued at once, and what comes while stopping, for up
        to L{shutdownTimeout} seconds; then give up on the rest, logging how
        many events were not delivered.

        It fires as soon as nothing is queued. L{MultiService} stops its
        children all at once, so a registry's shutdown C{disconnect} events
        that come after that are lost: stop this after the registry's
        C{stopService} has fired to post them.
        """
        super().stopService()
        for hook in self._hooks.values():
            hook.hurry()
        drained = DeferredList(
            [hook.whenIdle() for hook in self._hooks.values()], consumeErrors=True
        )
        drained.addTimeout(self.shutdownTimeout, self.reactor)
        drained.addErrback(lambda f: f.trap(TimeoutError, CancelledError) and None)
        drained.addCallback(lambda _: self._giveUp())
        if self._pool is not None:
            pool = self._pool
            drained.addCallback(lambda _: pool.closeCachedConnections())
        return drained

    def _giveUp(self) -> None:
        lost = 0
        for hook in self._hooks.values():
            lost += hook.close()
        if lost:
            self.log.warn("Webhooks: {count} events not delivered at shutdown", count=lost)


class _Hook:
    """
    One app's webhook: its undelivered events, oldest first, and the one
    post that may be in flight.

    Events carry consecutive sequence numbers: C{events[0]} is number
    C{head}. A post takes the current head and remembers where its batch
    ended, so whatever an overflow dropped meanwhile is neither retried nor
    removed twice: success removes the events before that end that are
    still here.
    """

    def __init__(self, owner: Webhooks, app: str, url: bytes) -> None:
        self.owner = owner
        self.app = app
        self.url = url
        self.log = owner.log
        self.metrics = owner.metrics
        # (seconds queued, serialised event)
        self.events: deque[tuple[float, bytes]] = deque()
        self.head = 0
        self.size = 0  # bytes of self.events
        self.inFlight: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.retrying = False  # self.timer is a backoff, not a batch delay
        self.failures = 0  # consecutive failed posts: the backoff
        self.failing = False  # a failure streak was logged
        self.failed = 0  # failed posts since the streak was logged
        self.firstTried: float | None = None  # the retried batch's first attempt
        self.overflowed = 0  # dropped since the queue last filled up
        self.closed = False
        self.idle: list[Deferred[None]] = []

    # -- adding ----------------------------------------------------------

    def add(self, event: dict[str, Any]) -> None:
        """
        Queue one event; never raises.
        """
        try:
            self._add(event)
        except Exception:
            self.log.failure("Webhook event of {app} not queued", app=self.app)

    def _add(self, event: dict[str, Any]) -> None:
        if self.closed:
            self._drop("shutdown", 1)
            return
        try:
            data = orjson.dumps(event)
        except TypeError:
            # orjson refuses lone surrogates; the stdlib writes them
            # as \u escapes, which a JSON parser can still read.
            data = json.dumps(event, separators=(",", ":")).encode("ascii")
        owner = self.owner
        self.events.append((owner.reactor.seconds(), data))
        self.size += len(data)
        events = self.events
        if len(events) > owner.maxEvents or self.size > owner.maxQueueBytes:
            self._overflow()
        if self.inFlight is None and not self.retrying:
            if self.timer is None:
                self.timer = owner.reactor.callLater(owner.batchDelay, self._send)
            if len(events) == owner.maxBatch or (
                self.size >= owner.maxBatchBytes > self.size - len(data)
            ):
                self.timer.reset(0)

    def _overflow(self) -> None:
        owner = self.owner
        events = self.events
        dropped = 0
        # The newest always stays: it alone is within both bounds.
        while len(events) > 1 and (
            len(events) > owner.maxEvents or self.size > owner.maxQueueBytes
        ):
            self.size -= len(events.popleft()[1])
            self.head += 1
            dropped += 1
        if not self.overflowed:
            self.log.warn(
                "Webhook queue of {app} is full ({limit} events or {limitBytes} bytes):"
                " dropping the oldest",
                app=self.app,
                limit=owner.maxEvents,
                limitBytes=owner.maxQueueBytes,
            )
        self.overflowed += dropped
        self._drop("overflow", dropped)

    def _drop(self, reason: str, count: int) -> None:
        if count and self.metrics is not None:
            self.metrics.webhookDropped(self.app, reason, count)

    def _removeUpTo(self, end: int) -> int:
        """
        Remove the events numbered before C{end} that are still queued.
        """
        count = min(end - self.head, len(self.events))
        if count <= 0:
            return 0
        events = self.events
        for _ in range(count):
            self.size -= len(events.popleft()[1])
        self.head += count
        return count

    # -- posting ---------------------------------------------------------

    def _send(self) -> None:
        self.timer = None
        self.retrying = False
        if self.inFlight is not None or not self.events or self.closed:
            self._checkIdle()
            return
        owner = self.owner
        batch, size = [], 0
        for _, data in self.events:
            if batch and (len(batch) >= owner.maxBatch or size + len(data) > owner.maxBatchBytes):
                break
            batch.append(data)
            size += len(data)
        end = self.head + len(batch)
        now = owner.reactor.seconds()
        if self.firstTried is None:
            self.firstTried = now
        body = b'{"app":%s,"events":[%s]}' % (orjson.dumps(self.app), b",".join(batch))
        d = maybeDeferred(self._post, body, int(now * 1000))
        d.addCallback(self._readAnswer)
        d.addTimeout(owner.timeout, owner.reactor)
        self.inFlight = d
        d.addBoth(self._answered, d, end)

    def _post(self, body: bytes, milliseconds: int) -> Deferred[IResponse]:
        # Signed at each attempt: a receiver rejects stale stamps.
        headers = Headers(
            {
                b"content-type": [b"application/json"],
                b"user-agent": [USER_AGENT.encode("ascii")],
                b"socktopus-signature": [
                    signature(self.owner.secrets(self.app), body, milliseconds).encode("ascii")
                ],
            }
        )
        return self.owner.agent.request(b"POST", self.url, headers, _BytesProducer(body))

    def _readAnswer(self, response: IResponse) -> Deferred[int]:
        """
        The answer's status, once its body is read (and thrown away) or cut.
        """
        finished: Deferred[None] = Deferred(lambda d: reader.cancel())
        reader = _Discard(finished, self.owner.maxAnswerBytes)
        response.deliverBody(reader)
        return finished.addCallback(lambda _: response.code)

    def _answered(self, result: int | Failure, d: Deferred[Any], end: int) -> None:
        if self.inFlight is not d or self.closed:
            return None  # given up on at shutdown
        self.inFlight = None
        try:
            if isinstance(result, Failure):
                self._failed(end, *_describe(result, self.owner.timeout))
            elif 200 <= result < 300:
                self._delivered(end)
            elif 500 <= result < 600:
                self._failed(end, "server_error", f"it answered {result}")
            else:
                self._rejected(result, end)
        except Exception:
            self.log.failure("Webhook of {app}: answer not handled", app=self.app)
        self._checkIdle()
        return None

    def _delivered(self, end: int) -> None:
        count = self._removeUpTo(end)
        if self.metrics is not None:
            self.metrics.webhookPost(self.app, "delivered")
            self.metrics.webhookDelivered(self.app, count)
        if self.failing:
            self.log.info(
                "Webhook of {app} delivering again after {failures} failed attempts",
                app=self.app,
                failures=self.failed,
            )
        self.failing = False
        self.failures = self.failed = 0
        self.firstTried = None
        if self.overflowed and len(self.events) < self.owner.maxEvents:
            self.log.warn(
                "Webhook queue of {app}: {count} events were dropped while it was full",
                app=self.app,
                count=self.overflowed,
            )
            self.overflowed = 0
        self._next()

    def _rejected(self, code: int, end: int) -> None:
        count = self._removeUpTo(end)
        if self.metrics is not None:
            self.metrics.webhookPost(self.app, "rejected")
        self._drop("rejected", count)
        # A receiver that answers is up: a new batch starts afresh.
        self.failures = 0
        self.firstTried = None
        self.log.warn(
            "Webhook of {app} answered {code}: {count} events dropped",
            app=self.app,
            code=code,
            count=count,
        )
        self._next()

    def _failed(self, end: int, outcome: str, problem: str) -> None:
        owner = self.owner
        if self.metrics is not None:
            self.metrics.webhookPost(self.app, outcome)
        self.failures += 1
        self.failed += 1
        if not self.failing:
            self.failing = True
            self.log.warn(
                "Webhook of {app} failing ({problem}); retrying with backoff",
                app=self.app,
                problem=problem,
            )
        now = owner.reactor.seconds()
        deadline = (self.firstTried or now) + owner.expiry
        # A millisecond's slack: a retry timed at the deadline may run a
        # float's rounding before it.
        if now >= deadline - 0.001:
            # That batch is given up on; the next one gets its own 10
            # minutes, after the backoff reached (the receiver is still down).
            count = self._removeUpTo(end)
            self._drop("expired", count)
            self.firstTried = None
            self.log.warn(
                "Webhook of {app}: {count} events dropped after {minutes:g} minutes of"
                " retries ({problem})",
                app=self.app,
                count=count,
                minutes=owner.expiry / 60,
                problem=problem,
            )
            if not self.events:
                return
            deadline = float("inf")
        # The exponent capped: a receiver down for days fails thousands of
        # times, and 2.0 ** 1024 overflows.
        backoff = min(owner.firstBackoff * 2.0 ** min(self.failures - 1, 60), owner.maxBackoff)
        # The last retry comes at the deadline, not a backoff past it.
        self.retrying = True
        self.timer = owner.reactor.callLater(min(backoff, deadline - now), self._send)

    def _next(self) -> None:
        """
        Schedule the next batch: at once when a full one waits or its first
        event waited long enough, else when it has waited L{batchDelay}.
        """
        if not self.events or self.closed:
            return
        owner = self.owner
        now = owner.reactor.seconds()
        if len(self.events) >= owner.maxBatch or self.size >= owner.maxBatchBytes:
            delay = 0.0
        else:
            delay = max(0.0, self.events[0][0] + owner.batchDelay - now)
        self.timer = owner.reactor.callLater(delay, self._send)

    # -- shutdown --------------------------------------------------------

    def hurry(self) -> None:
        """
        Stopping: post what waits now, without the batch delay or backoff.
        """
        if self.timer is not None:
            self.timer.reset(0)

    def whenIdle(self) -> Deferred[None]:
        """
        Fires when nothing is queued or in flight.
        """
        if not self.events and self.inFlight is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.idle.append(d)
        return d

    def _checkIdle(self) -> None:
        if self.idle and not self.events and self.inFlight is None:
            idle, self.idle = self.idle, []
            for d in idle:
                if not d.called:  # not cancelled by a shutdown's timeout
                    d.callback(None)

    def close(self) -> int:
        """
        Give up: cancel what is pending; return how many events are lost.
        """
        self.closed = True
        self.idle = []
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        inFlight, self.inFlight = self.inFlight, None
        if inFlight is not None:
            inFlight.cancel()
        lost = len(self.events)
        self._drop("shutdown", lost)
        self.events.clear()
        self.size = 0
        return lost


def _describe(failure: Failure, timeout: float) -> tuple[str, str]:
    """
    A failed post's outcome (for the metric) and what went wrong (for the
    log): never the request, whose headers hold the signature.
    """
    if failure.check(TimeoutError):
        return "timeout", f"no whole answer within {timeout:g} s"
    if failure.check(ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed):
        reasons = failure.value.reasons
        if reasons:
            failure = reasons[0]
    if failure.check(ConnectError):
        return "failed", f"cannot connect: {failure.getErrorMessage()}"
    return "failed", f"{failure.type.__name__}: {failure.getErrorMessage()}"


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body already in memory, written at once (Twisted's
    C{FileBodyProducer} would run on the global cooperator).
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(Protocol):
    """
    Reads an answer's body and keeps none of it; past C{limit} bytes it
    closes the connection rather than read on.
    """

    def __init__(self, finished: Deferred[None], limit: int) -> None:
        self.finished = finished
        self.remaining = limit
        self.aborted = False
        self.cancelled = False

    def dataReceived(self, data: bytes) -> None:
        self.remaining -= len(data)
        if self.remaining < 0:
            self.abort()

    def abort(self) -> None:
        if not self.aborted and self.transport is not None:
            self.aborted = True
            self.transport.stopProducing()

    def cancel(self) -> None:
        """
        The post timed out while its answer was read: it failed, whatever
        the status said.
        """
        self.cancelled = True
        self.abort()

    def connectionLost(self, reason: Failure) -> None:
        # Done or cut for being too long, the status is all we wanted.
        if not (self.cancelled or self.finished.called):
            self.finished.callback(None)
