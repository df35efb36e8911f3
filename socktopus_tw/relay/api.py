# -*- test-case-name: tests.relay -*-
"""
C{POST /send}, C{POST /kick} and C{POST /presence} (SPEC §3.3, §3.4, §7.1):
the backend's side of the relay.

C{/send} is the hot path: one JSON decode and one encode per request, no
Deferred, log line or re-encode per message. A body over C{inlineLimit} is
authenticated first, from its credentials alone (wherever they are in it),
then decoded, checked, delivered and answered a slice at a time, a few
slices per reactor turn (see L{socktopus_tw.relay.slices}), so a 16 MiB
request does not stall every other connection, and costs its size, no
more, to whoever does not know the secret. An answer of more than a slice
of ids (C{/presence} of a whole app may list 100,000) is encoded a slice
at a time too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator
from itertools import chain
from typing import Any

import orjson
from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.task import Cooperator
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from socktopus_tw import logs
from socktopus_tw.apps import Apps
from socktopus_tw.errors import ApiError, MalformedRequest
from socktopus_tw.http.fastpath import IDirectEndpoint
from socktopus_tw.http.respond import JsonResource, forLog
from socktopus_tw.metrics import Metrics
from socktopus_tw.relay.registry import IRegistry
from socktopus_tw.relay.slices import credentialsInSlices, decodeInSlices, encodeInSlices
from socktopus_tw.relay.totals import SendTotals

log = Logger()

_SEND_FIELDS = {"secretName", "secret", "messages"}
_KICK_FIELDS = {"secretName", "secret", "connections"}
_PRESENCE_FIELDS = _KICK_FIELDS


def decodeRequest(body: bytes, fields: set[str], optional: str | None = None) -> dict[str, Any]:
    """
    Decode a backend request: a JSON object with exactly C{fields} (or
    without the list field C{optional}), the two credentials strings and
    the third field a list. Anything else is L{MalformedRequest}, as the Go
    original rejected unknown fields too.
    """
    try:
        # orjson refuses what is not text (invalid UTF-8, a lone surrogate
        # escaped as "\\ud800"), NaN and a hostile nesting depth.
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedRequest() from None
    return checkFields(value, fields, optional)


def checkFields(value: Any, fields: set[str], optional: str | None = None) -> dict[str, Any]:
    """
    C{value} if it is an object with exactly C{fields}, or C{fields} but
    C{optional}: the two credentials strings (text: see L{checkText}) and
    the third field a list.
    """
    if type(value) is not dict:
        raise MalformedRequest()
    if value.keys() != fields and (optional is None or value.keys() != fields - {optional}):
        raise MalformedRequest()
    for name in value:
        expected = str if name.startswith("secret") else list
        if type(value[name]) is not expected:
            raise MalformedRequest()
    checkText(value["secretName"], value["secret"])
    return value


def checkText(*strings: str) -> None:
    """
    Refuse strings that are not text. orjson never makes one; the standard
    library's decoder, which L{decodeInSlices} uses, makes a lone surrogate
    of C{"\\ud800"}, which no UTF-8 encoder can write back.
    """
    for string in strings:
        if not string.isascii():
            try:
                string.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedRequest() from None


def framePayloads(messages: list[Any], limit: int) -> tuple[list[str], list[bytes | None]]:
    """
    Check every message before any is delivered: their recipients, and
    their frames' payloads (C{None} for one over C{limit} bytes, which fails).
    """
    recipients: list[str] = []
    payloads: list[bytes | None] = []
    for message in messages:
        # Exactly two keys, both present: the same as keys() == the two
        # field names, without building a set per message.
        if type(message) is not dict or len(message) != 2:
            raise MalformedRequest()
        recipient, content = message.get("recipient"), message.get("content")
        if type(recipient) is not str or type(content) is not str:
            raise MalformedRequest()
        try:
            payload = ("DATA:" + content).encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedRequest() from None
        if not recipient.isascii():
            checkText(recipient)
        recipients.append(recipient)
        payloads.append(payload if len(payload) <= limit else None)
    return recipients, payloads


@implementer(IDirectEndpoint)
class BackendResource(JsonResource):
    """
    Shared by C{/send}, C{/kick} and C{/presence}: decode and authenticate
    a backend's request. A body over C{inlineLimit} bytes is handled by
    L{handleInSlices}, C{sliceSize} elements of its array at a time.
    """

    fields: set[str]
    #: The request's one field that can be big: a list.
    arrayField: str
    #: A field a request may leave out (C{/presence} without ids asks for all).
    optionalField: str | None = None
    path: str
    inlineLimit = 256 * 1024
    sliceSize = 1000
    #: Bytes of a big body's array skipped per step while its credentials,
    #: after it, are looked for.
    skipWindow = 256 * 1024

    def __init__(self, apps: Apps, registry: IRegistry, reactor: Any) -> None:
        super().__init__()
        self.apps = apps
        self.registry = registry
        self.reactor = reactor
        # The default time slice: each reactor turn runs slices of work for
        # up to 10 ms, then lets every other connection have its turn.
        self.cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))

    def json_POST(self, request: Request) -> object:
        return self.post(request.content.getvalue())

    def post(self, body: bytes) -> object:
        """
        Answer a request body: the result, or a Deferred of it. Called by
        L{json_POST} and, for plain requests, directly by
        L{socktopus_tw.http.fastpath.FastPathChannel}.
        """
        if len(body) <= self.inlineLimit:
            return self.handle(decodeRequest(body, self.fields, self.optionalField))
        return self.inSlices(self.handleInSlices(body))

    def inSlices(self, work: Generator[None, None, Any]) -> Deferred[Any]:
        """
        Run C{work} cooperatively, a slice per step; the result fires with
        what it returns (or, if that is a Deferred, with its result).
        """
        done: Deferred[Any] = Deferred()

        def run() -> Iterator[None]:
            try:
                result = yield from work
            except Exception:
                done.errback()
                return
            if isinstance(result, Deferred):
                result.chainDeferred(done)
            else:
                done.callback(result)

        self.cooperator.cooperate(run())
        return done

    def handleInSlices(self, body: bytes) -> Generator[None, None, object]:
        """
        L{handle} for a big body, a slice at a time.
        """
        raise NotImplementedError()

    def decodeInSlices(self, body: bytes) -> Generator[None, None, dict[str, Any]]:
        """
        Decode a big body a slice at a time, once its credentials are found
        right: nobody without the secret makes the daemon build the objects
        of a 16 MiB body (several times its size).
        """
        credentials = yield from credentialsInSlices(
            body, self.fields, self.arrayField, self.skipWindow
        )
        checkText(*credentials.values())
        self.authenticate(credentials)
        value = yield from decodeInSlices(body, self.fields, self.arrayField, self.sliceSize)
        return checkFields(value, self.fields, self.optionalField)

    def slices(self, items: list[Any]) -> Iterator[list[Any]]:
        step = self.sliceSize
        for start in range(0, len(items), step):
            yield items[start : start + step]

    def authenticate(self, value: dict[str, Any]) -> str:
        try:
            return self.apps.authenticate(value["secretName"], value["secret"])
        except ApiError as e:
            # The name is the client's: escaped and cut (see forLog).
            log.info(
                "Refused {path} for app {app}: {why}",
                path=self.path,
                app=forLog(value["secretName"]),
                why=e.message,
            )
            raise

    def handle(self, value: dict[str, Any]) -> object:
        raise NotImplementedError()


class SendResource(BackendResource):
    """
    C{POST /send}: deliver each message in order; answer which succeeded.
    """

    fields = _SEND_FIELDS
    arrayField = "messages"
    path = "/send"

    def __init__(
        self,
        apps: Apps,
        registry: IRegistry,
        reactor: Any,
        maxMessageSize: int = 1024 * 1024,
        metrics: Metrics | None = None,
        totals: SendTotals | None = None,
    ) -> None:
        super().__init__(apps, registry, reactor)
        # A frame is "DATA:" plus the content: the cap is on the content.
        self.payloadLimit = maxMessageSize + 5
        self.metrics = metrics
        self.totals = totals
        # Batches waiting to be delivered, in the order they were accepted;
        # the first is being delivered a slice per step.
        self._queue: deque[tuple[Iterator[None], Deferred[None]]] = deque()
        self._draining = False

    def handle(self, value: dict[str, Any]) -> object:
        app = self.authenticate(value)
        messages = value["messages"]
        recipients, payloads = framePayloads(messages, self.payloadLimit)
        return self.accept(app, messages, recipients, payloads, big=False)

    def handleInSlices(self, body: bytes) -> Generator[None, None, object]:
        """
        L{handle} for a big body: decoded and checked a slice at a time.
        """
        value = yield from self.decodeInSlices(body)
        app = self.authenticate(value)
        messages = value["messages"]
        recipients: list[str] = []
        payloads: list[bytes | None] = []
        for some in self.slices(messages):
            someRecipients, somePayloads = framePayloads(some, self.payloadLimit)
            recipients += someRecipients
            payloads += somePayloads
            yield None
        return self.accept(app, messages, recipients, payloads, big=True)

    def accept(
        self,
        app: str,
        messages: list[Any],
        recipients: list[str],
        payloads: list[bytes | None],
        big: bool,
    ) -> object:
        """
        Deliver a checked batch, now or after the batches accepted before it.
        """
        # Up to a slice is delivered at once; more, a slice per step.
        if len(messages) <= self.sliceSize and not self._queue:
            outcomes = self.registry.deliverBatch(app, recipients, payloads)
            if type(outcomes) is list:
                return self._answer(app, sortMessages(messages, [outcomes]), big)
            # A registry that reaches other nodes learns their outcomes later.
            return outcomes.addCallback(
                lambda outcomes: self._answer(app, sortMessages(messages, [outcomes]), big)
            )
        # A big batch, or any batch while one is under way: queued, so frames
        # still arrive in the order /send accepted their batches.
        outcomes: list[list[bool] | Deferred[list[bool]]] = []
        deliveries = self._deliver(app, recipients, payloads, outcomes)
        delivered: Deferred[None] = Deferred()
        self._queue.append((deliveries, delivered))
        if not self._draining:
            # One drain at a time: a batch's answer may accept the next batch
            # (a pipelined request) while the drain that answered it runs.
            self._draining = True
            self.cooperator.cooperate(self._drain())
        delivered.addCallback(lambda _: self._collect(app, messages, outcomes, big))
        return delivered

    def _drain(self) -> Iterator[None]:
        try:
            while self._queue:
                deliveries, delivered = self._queue[0]
                try:
                    yield from deliveries
                except Exception:
                    self._queue.popleft()
                    delivered.errback()
                    continue
                self._queue.popleft()
                delivered.callback(None)
        finally:
            self._draining = False

    def _deliver(
        self,
        app: str,
        recipients: list[str],
        payloads: list[bytes | None],
        outcomes: list[list[bool] | Deferred[list[bool]]],
    ) -> Iterator[None]:
        """
        Deliver a slice at a time, yielding between them; each slice's
        outcomes (or a Deferred of them) go to C{outcomes}.
        """
        deliverBatch = self.registry.deliverBatch
        for some in zip(self.slices(recipients), self.slices(payloads), strict=True):
            outcomes.append(deliverBatch(app, *some))
            yield None

    def _collect(
        self,
        app: str,
        messages: list[Any],
        outcomes: list[list[bool] | Deferred[list[bool]]],
        big: bool,
    ) -> object:
        if all(type(some) is list for some in outcomes):
            return self._answer(app, sortMessages(messages, outcomes), big)
        waiting = gatherResults(
            [some if isinstance(some, Deferred) else succeed(some) for some in outcomes],
            consumeErrors=True,
        )
        # A registry's own error (e.g. a node unreachable), not gatherResults' wrapper.
        waiting.addErrback(lambda failure: failure.trap(FirstError) and failure.value.subFailure)
        return waiting.addCallback(
            lambda outcomes: self._answer(app, sortMessages(messages, outcomes), big)
        )

    def _answer(self, app: str, result: dict[str, list[Any]], big: bool) -> object:
        succeeded, failed = len(result["succeeded"]), len(result["failed"])
        # Summed into a line per app every 10 s; the batch's own is debug,
        # and not even made unless asked for (Logger.debug is ~1 us).
        if logs.shows(LogLevel.debug):
            log.debug(
                "Sent {succeeded} messages for {app}, {failed} failed",
                app=app,
                succeeded=succeeded,
                failed=failed,
            )
        if self.totals is not None:
            self.totals.add(app, succeeded, failed)
        if self.metrics is not None:
            self.metrics.sent(app, succeeded, failed)
        if big:
            return self.inSlices(encodeInSlices(result, self.sliceSize))
        return result


def sortMessages(messages: list[Any], outcomes: list[list[bool]]) -> dict[str, list[Any]]:
    """
    The answer to C{/send}: each message in C{succeeded} or C{failed}, by its
    outcome (C{outcomes} holds them a slice at a time), in their order.
    """
    flat = outcomes[0] if len(outcomes) == 1 else list(chain.from_iterable(outcomes))
    if all(flat):
        return {"succeeded": messages, "failed": []}
    succeeded: list[Any] = []
    failed: list[Any] = []
    for message, delivered in zip(messages, flat, strict=True):
        (succeeded if delivered else failed).append(message)
    return {"succeeded": succeeded, "failed": failed}


class KickResource(BackendResource):
    """
    C{POST /kick}: close these connections and keep them out; answers at once
    (a big one a slice per step).
    """

    fields = _KICK_FIELDS
    arrayField = "connections"
    path = "/kick"

    def handle(self, value: dict[str, Any]) -> object:
        app = self.authenticate(value)
        connectionIds = value["connections"]
        checkIds(connectionIds)
        outcome = self.registry.kick(app, connectionIds)
        if type(outcome) is tuple:
            return kickAnswer(outcome)
        return outcome.addCallback(kickAnswer)

    def handleInSlices(self, body: bytes) -> Generator[None, None, object]:
        value = yield from self.decodeInSlices(body)
        app = self.authenticate(value)
        for some in self.slices(value["connections"]):
            checkIds(some)
            yield None
        result: dict[str, list[Any]] = {"kicked": [], "notConnected": []}
        for some in self.slices(value["connections"]):
            outcome = self.registry.kick(app, some)
            if type(outcome) is not tuple:
                outcome = yield from settled(outcome)
            kicked, notConnected = outcome
            result["kicked"] += kicked
            result["notConnected"] += notConnected
            yield None
        return (yield from encodeInSlices(result, self.sliceSize))


def kickAnswer(outcome: tuple[list[str], list[str]]) -> dict[str, list[str]]:
    kicked, notConnected = outcome
    return {"kicked": kicked, "notConnected": notConnected}


def checkIds(connectionIds: list[Any]) -> None:
    if any(type(connectionId) is not str for connectionId in connectionIds):
        raise MalformedRequest()
    checkText(*connectionIds)


def settled(outcome: Deferred[Any]) -> Generator[Any, None, Any]:
    """
    The result of C{outcome}, from inside work a L{Cooperator} runs: the
    cooperator waits for a Deferred yielded to it (other nodes answer
    later), but does not throw a failure into the generator, so it is
    caught here and raised from it.
    """
    answered: list[Any] = []
    outcome.addBoth(answered.append)
    yield outcome
    result = answered[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class PresenceResource(BackendResource):
    """
    C{POST /presence}: which of these connections are connected, in the
    order asked (duplicates as given); without C{connections}, every
    connected id of the app and how many. A big request is looked up a
    slice per step, and an answer of more than a slice of ids encoded so.
    """

    fields = _PRESENCE_FIELDS
    arrayField = "connections"
    optionalField = "connections"
    path = "/presence"

    def handle(self, value: dict[str, Any]) -> object:
        app = self.authenticate(value)
        connectionIds = value.get("connections")
        if connectionIds is not None:
            checkIds(connectionIds)
        outcome = self.registry.presence(app, connectionIds)
        if type(outcome) is tuple:
            return self.answer(app, connectionIds, outcome)
        return outcome.addCallback(lambda outcome: self.answer(app, connectionIds, outcome))

    def handleInSlices(self, body: bytes) -> Generator[None, None, object]:
        value = yield from self.decodeInSlices(body)
        app = self.authenticate(value)
        connectionIds = value.get("connections")
        if connectionIds is None:
            # A small request, however much whitespace pads it: one lookup.
            outcome = self.registry.presence(app)
            if type(outcome) is not tuple:
                outcome = yield from settled(outcome)
            return (yield from self.encode(self.result(app, None, outcome)))
        for some in self.slices(connectionIds):
            checkIds(some)
            yield None
        connected: list[str] = []
        notConnected: list[str] = []
        for some in self.slices(connectionIds):
            outcome = self.registry.presence(app, some)
            if type(outcome) is not tuple:
                outcome = yield from settled(outcome)
            connected += outcome[0]
            notConnected += outcome[1]
            yield None
        return (yield from self.encode(self.result(app, connectionIds, (connected, notConnected))))

    def answer(
        self, app: str, connectionIds: list[str] | None, outcome: tuple[list[str], list[str]]
    ) -> object:
        """
        The answer to a request handled at once: as it is, or, with more
        than a slice of ids (a whole app's), encoded a slice per step.
        """
        result = self.result(app, connectionIds, outcome)
        connected, notConnected = outcome
        if len(connected) + len(notConnected) <= self.sliceSize:
            return result
        return self.inSlices(self.encode(result))

    def result(
        self, app: str, connectionIds: list[str] | None, outcome: tuple[list[str], list[str]]
    ) -> dict[str, Any]:
        connected, notConnected = outcome
        # Counts only: the ids are the backend's business, and may be many.
        log.info(
            "Presence for {app}: {connected} connected, {notConnected} not connected",
            app=app,
            connected=len(connected),
            notConnected=len(notConnected),
        )
        if connectionIds is None:
            return {"count": len(connected), "connected": connected}
        return {"connected": connected, "notConnected": notConnected}

    def encode(self, result: dict[str, Any]) -> Generator[None, None, bytes]:
        """
        L{encodeInSlices} for either answer; C{count}, a number, is written
        in front of the lists it encodes.
        """
        if "count" not in result:
            return (yield from encodeInSlices(result, self.sliceSize))
        encoded = yield from encodeInSlices({"connected": result["connected"]}, self.sliceSize)
        return b'{"count":%d,%s' % (result["count"], encoded[1:])
