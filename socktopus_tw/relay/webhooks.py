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
that the oldest waiting go (those of the post in flight are already on their
way). A post carries at most L{Webhooks.maxBatch} events (and about
L{Webhooks.maxBatchBytes}); a receiver's answer is read only up to
L{Webhooks.maxAnswerBytes} and thrown away, and the head of an answer only up
to L{maxAnswerHeadBytes}.
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
from twisted.internet.error import (
    ConnectError,
    ConnectionClosed,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS, HTTP11ClientProtocol, ParseError
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
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
        past that the oldest waiting are dropped (not those in flight: they
        are on their way, and may yet be delivered).
    @ivar maxQueueBytes: the same bound on their serialised size, since an
        event's content may be as big as C{--max-message-size}.
    @ivar timeout: seconds for a whole post, the answer read included.
    @ivar firstBackoff: seconds before the first retry; doubled per failure
        up to C{maxBackoff}.
    @ivar expiry: seconds after a batch's first attempt after which it is
        dropped if still not delivered.
    @ivar maxAnswerBytes: of an answer's body, this much is read (and thrown
        away, letting the connection be reused); past it the connection is
        closed. Its head is bounded apart (L{maxAnswerHeadBytes}).
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
            self._pool = _Pool(reactor, persistent=True)
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
        return {app: len(hook.events) + len(hook.sending) for app, hook in self._hooks.items()}

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

    A post takes its batch out of C{events} into C{sending}; an answer then
    settles exactly those (delivered, rejected or expired) or, on a failure
    to retry, puts them back in front. An overflow drops only from
    C{events}: the events in flight are on their way, and dropping them too
    would count as dropped events the receiver then got.
    """

    def __init__(self, owner: Webhooks, app: str, url: bytes) -> None:
        self.owner = owner
        self.app = app
        self.url = url
        self.log = owner.log
        self.metrics = owner.metrics
        # (seconds queued, serialised event), waiting and in flight
        self.events: deque[tuple[float, bytes]] = deque()
        self.sending: list[tuple[float, bytes]] = []
        self.size = 0  # bytes of both
        self.inFlight: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.retrying = False  # self.timer is a backoff, not a batch delay
        self.failures = 0  # consecutive failed posts: the backoff
        self.failing = False  # a failure streak was logged
        self.failed = 0  # failed posts since the streak was logged
        self.problem: str | None = None  # what the streak's last line said
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
            # A copy: orjson's bytes keep a buffer of at least 4 KiB (the
            # length is set, the allocation not shrunk), so 10,000 small
            # events would hold 40 MiB while self.size said 1 MiB.
            data = bytes(memoryview(orjson.dumps(event)))
        except TypeError:
            # orjson refuses lone surrogates; the stdlib writes them
            # as \u escapes, which a JSON parser can still read.
            data = json.dumps(event, separators=(",", ":")).encode("ascii")
        owner = self.owner
        self.events.append((owner.reactor.seconds(), data))
        self.size += len(data)
        events = self.events
        if len(events) + len(self.sending) > owner.maxEvents or self.size > owner.maxQueueBytes:
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
        inFlight = len(self.sending)
        # The newest always stays: it alone is within both bounds (a post
        # in flight holds at most maxBatch events and about maxBatchBytes).
        while len(events) > 1 and (
            len(events) + inFlight > owner.maxEvents or self.size > owner.maxQueueBytes
        ):
            self.size -= len(events.popleft()[1])
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

    def _settle(self) -> int:
        """
        Forget the events of the post that was in flight; how many.
        """
        sending, self.sending = self.sending, []
        self.size -= sum(len(data) for _, data in sending)
        return len(sending)

    # -- posting ---------------------------------------------------------

    def _send(self) -> None:
        self.timer = None
        self.retrying = False
        if self.inFlight is not None or not self.events or self.closed:
            self._checkIdle()
            return
        owner = self.owner
        events, sending, size = self.events, self.sending, 0
        while events and not (
            sending
            and (len(sending) >= owner.maxBatch or size + len(events[0][1]) > owner.maxBatchBytes)
        ):
            sending.append(events.popleft())
            size += len(sending[-1][1])
        now = owner.reactor.seconds()
        if self.firstTried is None:
            self.firstTried = now
        body = b'{"app":%s,"events":[%s]}' % (
            orjson.dumps(self.app),
            b",".join(data for _, data in sending),
        )
        d = maybeDeferred(self._post, body, int(now * 1000))
        d.addCallback(self._readAnswer)
        d.addTimeout(owner.timeout, owner.reactor, onTimeoutCancel=_timedOut)
        self.inFlight = d
        d.addBoth(self._answered, d)

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

    def _answered(self, result: int | Failure, d: Deferred[Any]) -> None:
        if self.inFlight is not d or self.closed:
            return None  # given up on at shutdown
        self.inFlight = None
        try:
            if isinstance(result, Failure):
                self._failed(*_describe(result, self.owner.timeout))
            elif 200 <= result < 300:
                self._delivered()
            elif 500 <= result < 600:
                self._failed("server_error", f"answered {result}")
            else:
                self._rejected(result)
        except Exception:
            self.log.failure("Webhook for {app}: answer not handled", app=self.app)
        self._checkIdle()
        return None

    def _delivered(self) -> None:
        count = self._settle()
        if self.metrics is not None:
            self.metrics.webhookPost(self.app, "delivered")
            self.metrics.webhookDelivered(self.app, count)
        if self.failing:
            self.log.info(
                "Webhook for {app} delivering again after {failures} failed attempts",
                app=self.app,
                failures=self.failed,
            )
        self.failing = False
        self.problem = None
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

    def _rejected(self, code: int) -> None:
        count = self._settle()
        if self.metrics is not None:
            self.metrics.webhookPost(self.app, "rejected")
        self._drop("rejected", count)
        # A receiver that answers is up: a new batch starts afresh.
        self.failures = 0
        self.firstTried = None
        self.log.warn(
            "Webhook for {app} answered {code}: {count} events dropped",
            app=self.app,
            code=code,
            count=count,
        )
        self._next()

    def _failed(self, outcome: str, problem: str) -> None:
        owner = self.owner
        if self.metrics is not None:
            self.metrics.webhookPost(self.app, outcome)
        self.failures += 1
        self.failed += 1
        now = owner.reactor.seconds()
        deadline = (self.firstTried or now) + owner.expiry
        # A millisecond's slack: a retry timed at the deadline may run a
        # float's rounding before it.
        if now >= deadline - 0.001:
            # That batch is given up on; the next one gets its own 10
            # minutes, after the backoff reached (the receiver is still down).
            count = self._settle()
            self._drop("expired", count)
            self.firstTried = None
            self.log.warn(
                "Webhook for {app}: {count} events dropped after {minutes:g} minutes of"
                " retries ({problem})",
                app=self.app,
                count=count,
                minutes=owner.expiry / 60,
                problem=problem,
            )
            if not self.events:
                self.failing = True
                return
            deadline = float("inf")
        else:
            # Not delivered: first again, in their order.
            self.events.extendleft(reversed(self.sending))
            self.sending = []
        # The exponent capped: a receiver down for days fails thousands of
        # times, and 2.0 ** 1024 overflows.
        backoff = min(owner.firstBackoff * 2.0 ** min(self.failures - 1, 60), owner.maxBackoff)
        # The last retry comes at the deadline, not a backoff past it.
        delay = min(backoff, deadline - now)
        # A line when a streak starts and when its problem changes, not one
        # per attempt: a receiver down for a day is 2,880 attempts.
        if not self.failing or problem != self.problem:
            self.failing = True
            self.problem = problem
            self.log.warn(
                "Webhook for {app} {problem}; retrying in {delay:g} s",
                app=self.app,
                problem=problem,
                delay=delay,
            )
        self.retrying = True
        self.timer = owner.reactor.callLater(delay, self._send)

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
        lost = len(self.events) + len(self.sending)
        self._drop("shutdown", lost)
        self.events.clear()
        self.sending = []
        self.size = 0
        return lost


def _timedOut(result: Any, timeout: float) -> Any:
    """
    A post cancelled by its timeout failed for that, whatever the Agent made
    of the cancel: it reports one after the request was sent as the answer
    lost (L{ResponseNeverReceived} of a L{CancelledError}), which
    C{addTimeout} would pass on as is.
    """
    if isinstance(result, Failure):
        return Failure(TimeoutError(f"no whole answer within {timeout:g} s"))
    return result


#: What a receiver did, by the Agent's wrapper of a lost connection.
_CLOSED = {
    ResponseNeverReceived: "closed the connection without answering",
    ResponseFailed: "closed the connection in the middle of its answer",
    RequestTransmissionFailed: "closed the connection before the request was sent",
}


def _describe(failure: Failure, timeout: float) -> tuple[str, str]:
    """
    A failed post's outcome (for the metric) and what went wrong, as words
    that follow "Webhook for <app>" on one line: never a traceback, nor the
    request, whose headers hold the signature.
    """
    if failure.check(TimeoutError):
        return "timeout", f"timed out after {timeout:g} s"
    wrapper = failure.check(ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed)
    if wrapper is not None and failure.value.reasons:
        failure = failure.value.reasons[0]
    if failure.check(ConnectionRefusedError):
        return "failed", "could not connect (connection refused)"
    if failure.check(DNSLookupError, ConnectError):
        return "failed", f"could not connect ({_words(failure.getErrorMessage())})"
    if failure.check("OpenSSL.SSL.Error"):
        # [(library, function, reason), ...]: the reasons say it.
        errors = failure.value.args[0] if failure.value.args else []
        reasons = ", ".join(str(e[-1]) for e in errors if isinstance(e, tuple) and e)
        return "failed", f"could not connect (TLS: {_words(reasons or 'handshake failed')})"
    if failure.check("service_identity.exceptions.VerificationError"):
        return "failed", f"could not connect (TLS: {_words(str(failure.value))})"
    if failure.check(AnswerHeadTooLong):
        return "failed", str(failure.value)
    if failure.check(ConnectionClosed) and wrapper is not None:
        return "failed", _CLOSED[wrapper]
    if failure.check(ParseError):
        # Its second argument is the line it could not parse: the receiver's.
        detail = _words(failure.value.args[0])
    else:
        detail = f"{failure.type.__name__}: {_words(failure.getErrorMessage())}"
    if wrapper in (ResponseNeverReceived, ResponseFailed):
        # What the parser raised on the answer (a header without a colon,
        # an unknown transfer encoding, a bad chunk).
        return "failed", f"answered something that is not HTTP ({detail})"
    return "failed", detail


def _words(text: Any, limit: int = 200) -> str:
    """
    C{text} for the middle of a log line: one line, no final period, cut.
    """
    words = " ".join(str(text).split()).rstrip(".")
    return words if len(words) <= limit else words[: limit - 1] + "…"


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


#: Of an answer's head (status line and headers, 1xx answers before it
#: included), this much is read; past it the connection is dropped. As
#: twisted.web's server bounds a request's headers: the Agent's parser keeps
#: every header line it is sent, as many as a receiver sends in 10 s.
maxAnswerHeadBytes = 16 * 1024


#: Interim (1xx) answers taken before the answer: Twisted's client logs a
#: line for each ("Ignoring unexpected 100 response"), and 16 KiB of them
#: are 650 lines a post.
maxInterimAnswers = 4


class AnswerHeadTooLong(Exception):
    """
    A receiver sent more than L{maxAnswerHeadBytes} of an answer's head, or
    more than L{maxInterimAnswers} 1xx answers before it.
    """

    def __init__(self, interim: bool = False) -> None:
        super().__init__(interim)
        self.interim = interim

    def __str__(self) -> str:
        if self.interim:
            return f"sent over {maxInterimAnswers} interim (1xx) answers"
        return f"sent an answer head over {maxAnswerHeadBytes // 1024} KiB"


class _BoundedClientProtocol(HTTP11ClientProtocol):
    """
    Twisted's HTTP/1.1 client, reading at most L{maxAnswerHeadBytes} of each
    answer's head, and at most L{maxInterimAnswers} 1xx answers.
    """

    _headBytes = 0

    def request(self, request: Any) -> Deferred[IResponse]:
        self._headBytes = 0
        d = super().request(request)
        parser = self._parser
        if parser is not None:
            # Its parser is made in there; it reads each answer's status
            # line with self.statusReceived.
            statusReceived, interim = parser.statusReceived, [0]

            def counted(status: bytes) -> None:
                parts = status.split(None, 2)
                if len(parts) > 1 and parts[1][:1] == b"1":
                    interim[0] += 1
                    if interim[0] > maxInterimAnswers:
                        raise AnswerHeadTooLong(interim=True)  # the connection dropped
                statusReceived(status)

            parser.statusReceived = counted
        return d

    def dataReceived(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or parser.state not in (STATUS, HEADER):
            super().dataReceived(data)
            return
        room = maxAnswerHeadBytes - self._headBytes
        self._headBytes += len(data)
        if len(data) <= room:
            super().dataReceived(data)
            return
        # The head may end within this read, its body after: parse up to
        # the bound, and the rest only if the head ended there.
        super().dataReceived(data[:room])
        parser = self._parser
        if parser is None:
            return  # the whole answer was within: the rest is no answer's
        if parser.state in (STATUS, HEADER):
            # Aborted, not closed: a close waits to send what is buffered,
            # forever if the receiver does not read.
            self.transport.abortConnection()
            self._disconnectParser(Failure(AnswerHeadTooLong()))
            return
        super().dataReceived(data[room:])


class _QuietFactory(_HTTP11ClientFactory):
    """
    Makes L{_BoundedClientProtocol}s, without Twisted's two info lines
    ("Starting factory", "Stopping factory") per connection: a receiver that
    closes each one, or times out each post, would fill the log with them.
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return _BoundedClientProtocol(self._quiescentCallback)


class _Pool(HTTPConnectionPool):
    """
    Twisted's persistent connection pool, with L{_QuietFactory}'s
    connections.
    """

    _factory = _QuietFactory
