# -*- test-case-name: tests.cluster.test_registry,tests.cluster.test_nodes -*-
"""
L{ClusterRegistry}: the registry of one node of a cluster (SPEC §6).

It holds this node's connections in a L{LocalRegistry}, and a directory in
Redis says which node holds every other connection. Local recipients are
delivered directly; the others' messages go to their nodes in one Redis
message per node per batch (L{socktopus_tw.cluster.scripts.DELIVER}), and
each node answers which it handed over, so C{succeeded} means handed to the
connection's node and written there, exactly as on one node.

Nothing here blocks on Redis for longer than L{DEADLINE}: while Redis is
unreachable, local deliveries go on, messages for other nodes fail at once,
and once it is back this node claims its connections again and reloads the
deny-list (L{ClusterRegistry.restore}).
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import orjson
import txredisapi
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socktopus_tw.cluster.redis import DEADLINE, RedisLink, RedisUnavailable, probe
from socktopus_tw.cluster.redisurl import RedisAddress
from socktopus_tw.cluster.scripts import (
    CHANGES,
    DELIVER,
    DENIED,
    HEARTBEAT,
    KICK,
    LEAVE,
    PREFIX,
    PRESENCE,
    PRESENCE_PAGE,
    REMEMBER,
    RESTORE,
)
from socktopus_tw.errors import ServiceUnavailable
from socktopus_tw.relay import events
from socktopus_tw.relay.registry import IRegistry, IRelayConnection, LocalRegistry

#: Seconds between heartbeats, and without one after which a node is dead
#: (SPEC §6: a dead node stops counting within 10 s).
HEARTBEAT_INTERVAL = 1.0
LIVENESS = 4.0

#: Entries of an app's directory read per round trip for a C{/presence} of
#: the whole app: a page's answer is handled in well under a millisecond.
PRESENCE_PAGE_SIZE = 1000

#: Seconds a batch waits for other nodes' answers: under SPEC §6's 2 s with
#: room for the request and its answer.
REPLY_DEADLINE = DEADLINE - 0.2

#: Connections claimed again per script after Redis came back.
RESTORE_CHUNK = 1000


class _Pending:
    """
    One batch's messages for other nodes, waiting for their answers.
    """

    __slots__ = ("answered", "deferred", "expected", "indices", "outcomes", "timer")

    def __init__(self, outcomes: list[bool], indices: list[int]) -> None:
        self.outcomes = outcomes
        self.indices = indices
        self.deferred: Deferred[list[bool]] = Deferred()
        self.expected: int | None = None
        self.answered = 0
        self.timer: Any = None


@implementer(IRegistry)
class ClusterRegistry(MultiService):
    """
    One node's view of the cluster's connections, behind L{IRegistry}.

    @ivar node: this node's id, new at every start, so a restarted node
        never inherits the entries of its previous life.
    """

    log = Logger()
    name = "registry"

    def __init__(
        self, local: LocalRegistry, address: RedisAddress, reactor: Any, node: str | None = None
    ) -> None:
        super().__init__()
        self.local = local
        self.clock = reactor
        self.address = address
        self.node = node or secrets.token_hex(8)
        self.channel = f"{PREFIX}n:{self.node}"
        self.link = RedisLink(
            address,
            reactor,
            [self.channel, f"{PREFIX}all"],
            onMessage=self.received,
            onReady=self._linkReady,
        )
        local.setServiceParent(self)
        self.link.setServiceParent(self)
        self._livenessMs = str(int(LIVENESS * 1000))
        self._generations: dict[IRelayConnection, str] = {}
        self._nextGeneration = itertools.count(1)
        self._requests = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        #: Other live nodes -> their clients per app, from the last heartbeat.
        self._others: dict[str, dict[str, int]] = {}
        self._lastBeat: float | None = None
        self._restoring: Deferred[None] | None = None
        self._restoreAgain = False
        self._beat = LoopingCall(self.heartbeat)
        self._beat.clock = reactor
        self._down = False
        self._changes: list[str] = []
        self._flushing: Any = None

    # -- lifecycle -------------------------------------------------------

    def privilegedStartService(self) -> None:
        # Before the database is touched (and before the reactor runs, so
        # nothing is accepted yet): an unreachable Redis is one clear line
        # and a non-zero exit (SPEC §6).
        since = (self.clock.seconds() - self.local.tokenLifespan) * 1000
        version, denied = probe(self.address, deniedSince=since)
        # Kicks made elsewhere are refused from the first connection on.
        self._remember(denied)
        self.log.info(
            "Cluster node {node} of Redis {address} (Redis {version})",
            node=self.node,
            address=str(self.address),
            version=version,
        )
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self._beat.start(HEARTBEAT_INTERVAL, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Close this node's clients, then leave the cluster: this node's
        entries go at once rather than when its heartbeat expires.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        if self._beat.running:
            self._beat.stop()
        await self.local.stopService()
        self.flush()
        try:
            await self.link.run(LEAVE, self.node)
        except Exception:
            pass
        await self.link.stopService()

    def whenDrained(self) -> Deferred[None]:
        return self.local.whenDrained()

    def ready(self) -> None:
        """
        For C{/ready}: raise L{ServiceUnavailable} unless Redis answered a
        heartbeat lately.
        """
        now = self.clock.seconds()
        if (
            not self.link.up
            or self._lastBeat is None
            or now - self._lastBeat > 2 * HEARTBEAT_INTERVAL + DEADLINE
        ):
            raise ServiceUnavailable("Redis unavailable")

    # -- connections -----------------------------------------------------

    def register(self, connection: IRelayConnection) -> None:
        self.local.register(connection)
        if self.local.connection(connection.app, connection.connectionId) is not connection:
            return  # shutting down: evicted at once
        # When it connected, then a count: RESTORE keeps the newer of two.
        generation = f"{int(self.clock.seconds() * 1000)}.{next(self._nextGeneration)}"
        self._generations[connection] = generation
        self._change("r", generation, connection)

    def unregister(
        self, connection: IRelayConnection, reason: str = events.CLIENT, closing: bool = False
    ) -> None:
        self.local.unregister(connection, reason, closing)
        generation = self._generations.pop(connection, None)
        if generation is not None:
            self._change("u", generation, connection)

    def _change(self, op: str, generation: str, connection: IRelayConnection) -> None:
        # While Redis is away nothing is queued: restore() claims what is
        # connected once it is back, and forgets the rest.
        if not self.link.up:
            return
        self._changes += (op, generation, connection.app, connection.connectionId)
        if self._flushing is None:
            self._flushing = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Tell Redis this turn's connects and disconnects, in order, in as few
        scripts as possible.
        """
        if self._flushing is not None and self._flushing.active():
            self._flushing.cancel()
        self._flushing = None
        changes, self._changes = self._changes, []
        step = 4 * RESTORE_CHUNK
        for start in range(0, len(changes), step):
            self.link.run(CHANGES, self.node, *changes[start : start + step]).addErrback(
                self._stepFailed, "register"
            )

    def sync(self) -> Deferred[Any]:
        """
        Fires once every step this node has taken so far has run in Redis.
        """
        self.flush()
        return self.link.ping()

    def activity(self, connection: IRelayConnection) -> None:
        self.local.activity(connection)

    def acceptsMessages(self, app: str) -> bool:
        return self.local.acceptsMessages(app)

    def message(self, connection: IRelayConnection, content: str) -> None:
        # Each node posts the events of its own connections (SPEC §7.2).
        self.local.message(connection, content)

    # -- deliveries ------------------------------------------------------

    def deliver(self, app: str, connectionId: str, payload: bytes) -> bool | Deferred[bool]:
        outcomes = self.deliverBatch(app, [connectionId], [payload])
        if type(outcomes) is list:
            return outcomes[0]
        return outcomes.addCallback(lambda outcomes: outcomes[0])

    def deliverBatch(
        self, app: str, recipients: list[str], payloads: list[bytes | None]
    ) -> list[bool] | Deferred[list[bool]]:
        """
        Local recipients now; the others through their nodes, answering
        once every node has (or L{DEADLINE} has passed: then not succeeded).
        """
        find = self.local.connection
        outcomes: list[bool] = []
        elsewhere: list[int] = []
        for index, (connectionId, payload) in enumerate(zip(recipients, payloads, strict=True)):
            if payload is None:
                outcomes.append(False)
                continue
            connection = find(app, connectionId)
            if connection is not None:
                outcomes.append(connection.deliver(payload))
            else:
                outcomes.append(False)
                elsewhere.append(index)
        if not elsewhere or not self.link.up:
            return outcomes
        request = next(self._requests)
        pending = _Pending(outcomes, elsewhere)
        self._pending[request] = pending
        pending.timer = self.clock.callLater(REPLY_DEADLINE, self._settle, request)
        args: list[str | bytes] = [self.node, str(request), app, self._livenessMs]
        dumps = orjson.dumps
        for position, index in enumerate(elsewhere):
            connectionId = recipients[index]
            args.append(connectionId)
            args.append(dumps([position, connectionId, payloads[index].decode("utf-8")]))
        self.link.run(DELIVER, *args).addCallbacks(
            self._published, self._unpublished, callbackArgs=(request,), errbackArgs=(request,)
        )
        return pending.deferred

    def _published(self, sent: int, request: int) -> None:
        pending = self._pending.get(request)
        if pending is None:
            return
        pending.expected = int(sent)
        if pending.answered >= pending.expected:
            self._settle(request)

    def _unpublished(self, failure: Failure, request: int) -> None:
        self._stepFailed(failure, "deliver")
        self._settle(request)

    def _settle(self, request: int) -> None:
        pending = self._pending.pop(request, None)
        if pending is None:
            return
        if pending.timer.active():
            pending.timer.cancel()
        pending.deferred.callback(pending.outcomes)

    def _answered(self, request: int, handed: list[int]) -> None:
        pending = self._pending.get(request)
        if pending is None:
            return  # too late: already answered as failed
        for position in handed:
            pending.outcomes[pending.indices[position]] = True
        pending.answered += 1
        if pending.expected is not None and pending.answered >= pending.expected:
            self._settle(request)

    # -- messages from other nodes ---------------------------------------

    def received(self, message: bytes) -> None:
        """
        A message on this node's channel or the cluster's.
        """
        try:
            body = orjson.loads(message)
            kind = body["t"]
            if kind == "d":
                self._deliverFor(body["f"], body["r"], body["a"], body["m"])
            elif kind == "r":
                self._answered(body["r"], body["ok"])
            elif kind == "e":
                self._replaced(body["a"], body["i"], body["g"])
            elif kind == "k":
                if body["f"] != self.node:
                    self._kickedElsewhere(body["a"], body["i"], body["ms"])
            elif kind == "m":
                for app, connectionId, at in body["k"]:
                    self.local.remember(app, connectionId, at)
        except Exception:
            self.log.failure(
                "A cluster message could not be handled: {message!r}", message=message[:200]
            )

    def _deliverFor(self, sender: str, request: int, app: str, records: list) -> None:
        find = self.local.connection
        handed = []
        for position, connectionId, text in records:
            connection = find(app, connectionId)
            if connection is not None and connection.deliver(text.encode("utf-8")):
                handed.append(position)
        answer = orjson.dumps({"t": "r", "r": request, "ok": handed})
        self.link.publish(f"{PREFIX}n:{sender}", answer).addErrback(self._stepFailed, "answer")

    def _replaced(self, app: str, connectionId: str, generation: str) -> None:
        connection = self.local.connection(app, connectionId)
        if connection is not None and self._generations.get(connection) == generation:
            self.log.info(
                "Replacing connection {app}/{connectionId}: it connected to another node",
                app=app,
                connectionId=connectionId,
            )
            self._generations.pop(connection, None)
            self.local.evict(connection)

    def _kickedElsewhere(self, app: str, connectionIds: list[str], at: float) -> None:
        kicked, _ = self.local.refuse(app, connectionIds, at)
        for connectionId in kicked:
            self.log.info(
                "Kicked {app}/{connectionId} (by another node)", app=app, connectionId=connectionId
            )

    # -- kicks and presence ----------------------------------------------

    def kick(
        self, app: str, connectionIds: list[str]
    ) -> tuple[list[str], list[str]] | Deferred[tuple[list[str], list[str]]]:
        at = self.clock.seconds() * 1000
        here, _ = self.local.refuse(app, connectionIds, at)

        def answer(elsewhere: list[bytes] | None) -> tuple[list[str], list[str]]:
            connected = set(here)
            if elsewhere:
                connected.update(e.decode("utf-8") for e in elsewhere)
            kicked = [i for i in connectionIds if i in connected]
            notConnected = [i for i in connectionIds if i not in connected]
            self.local.logKick(app, kicked, notConnected)
            return kicked, notConnected

        if not self.link.up:
            self.log.warn("Kick for {app}: Redis is unreachable, other nodes not told", app=app)
            return answer(None)
        broadcast = orjson.dumps({"t": "k", "f": self.node, "a": app, "ms": at, "i": connectionIds})
        lifespan = str(int(self.local.tokenLifespan * 1000))
        d = self.link.run(
            KICK, self.node, app, repr(at), lifespan, broadcast, self._livenessMs, *connectionIds
        )

        def failed(failure: Failure) -> None:
            self._stepFailed(failure, "kick")
            return None

        return d.addErrback(failed).addCallback(answer)

    def isKicked(self, app: str, connectionId: str, stampMilliseconds: float) -> bool:
        return self.local.isKicked(app, connectionId, stampMilliseconds)

    def presence(
        self, app: str, connectionIds: list[str] | None = None
    ) -> tuple[list[str], list[str]] | Deferred[tuple[list[str], list[str]]]:
        here, elsewhere = self.local.presence(app, connectionIds)
        if not self.link.up or (connectionIds is not None and not elsewhere):
            return here, elsewhere
        if connectionIds is None:
            return Deferred.fromCoroutine(self._everyone(app, here))
        d = self.link.run(PRESENCE, self.node, self._livenessMs, app, *elsewhere)

        def answer(found: list[bytes] | None) -> tuple[list[str], list[str]]:
            remote = {f.decode("utf-8") for f in found or ()}
            connected = set(here) | remote
            return (
                [i for i in connectionIds if i in connected],
                [i for i in connectionIds if i not in connected],
            )

        def failed(failure: Failure) -> None:
            self._stepFailed(failure, "presence")
            return None

        return d.addErrback(failed).addCallback(answer)

    async def _everyone(self, app: str, here: list[str]) -> tuple[list[str], list[str]]:
        """
        Every connected id of C{app}: C{here}, then the other nodes' read
        from the directory a page per round trip, each page merged as it
        comes (a whole app of 100,000 is a hundred short turns, not one
        long one). Without Redis' answer, this node's own.
        """
        connected = list(here)
        local = self.local.connection
        # An id that moved away from here during the scan is listed once.
        seen: set[str] = set(here)
        cursor = b"0"
        size = str(PRESENCE_PAGE_SIZE)
        try:
            while True:
                page = await self.link.run(
                    PRESENCE_PAGE, self.node, self._livenessMs, app, cursor, size
                )
                cursor = page[0]
                for raw in page[1:]:
                    connectionId = raw.decode("utf-8")
                    # The scan may repeat an id, and one connected here may
                    # still name another node in the directory.
                    if connectionId not in seen and local(app, connectionId) is None:
                        seen.add(connectionId)
                        connected.append(connectionId)
                if cursor == b"0":
                    return connected, []
        except Exception:
            self._stepFailed(Failure(), "presence")
            return here, []

    # -- counts ----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = self.local.counts()
        for others in self._others.values():
            for app, n in others.items():
                counts[app] = counts.get(app, 0) + n
        return counts

    def count(self, app: str | None = None) -> int:
        counts = self.counts()
        return counts.get(app, 0) if app is not None else sum(counts.values())

    def nodes(self) -> int:
        return 1 + len(self._others)

    # -- keeping the cluster's view whole --------------------------------

    def _linkReady(self) -> None:
        # Both connections are (back) up: messages may have been missed and
        # steps skipped while they were not, so claim everything again, and
        # beat now rather than in up to a second.
        self.restore()
        self.heartbeat()

    def heartbeat(self) -> Deferred[None]:
        """
        Say this node is live (with its counts), and learn the others'.
        """
        if not self.link.up:
            self._others.clear()
            if self._lastBeat is not None:
                # Said once per outage, also by a node with nothing to send.
                self._stepFailed(RedisUnavailable("not connected"), "heartbeat")
            return succeed(None)
        d = self.link.run(
            HEARTBEAT,
            self.node,
            self._livenessMs,
            orjson.dumps(self.local.counts()),
            str(int(self.local.tokenLifespan * 1000)),
        )
        # Nothing else is ever sent on the subscribed connection: a round
        # trip each beat drops one that died silently (its deadline), and
        # the link connects again and restores.
        self.link.pingSubscriber().addErrback(lambda _: None)

        def beaten(result: list[Any]) -> None:
            wasLive, nodes, counts = result
            self._lastBeat = self.clock.seconds()
            if self._down:
                self._down = False
                self.log.info("Redis {address} answers again", address=str(self.address))
            others = {}
            for node, text in zip(nodes, counts, strict=True):
                node = node.decode()
                if node != self.node and text is not None:
                    others[node] = orjson.loads(text)
            self._others = others
            if not int(wasLive) and self._restoring is None:
                # Redis restarted, or this node was thought dead: claim again.
                self.restore()

        def failed(failure: Failure) -> None:
            self._others.clear()
            self._stepFailed(failure, "heartbeat")

        return d.addCallbacks(beaten, failed)

    def restore(self) -> Deferred[None]:
        """
        Claim every local connection again (unless another node holds its id
        now: then it is closed) and reload the kicks still in force: after
        Redis came back, or after this node was taken for dead.
        """
        if self._restoring is not None:
            self._restoreAgain = True
            return self._restoring
        d = Deferred.fromCoroutine(self._restore())
        # A restore that failed at once (Redis away) has finished already.
        self._restoring = None if d.called else d
        return d

    async def _restore(self) -> None:
        try:
            while True:
                self._restoreAgain = False
                await self._claimAll()
                if not self._restoreAgain:
                    break
        except Exception:
            self._stepFailed(Failure(), "restore")
        finally:
            self._restoring = None

    async def _claimAll(self) -> None:
        # Kicks answered here while Redis was away become cluster-wide.
        lifespan = self.local.tokenLifespan * 1000
        kicks = self.local.kicks()
        for start in range(0, len(kicks), RESTORE_CHUNK):
            some = kicks[start : start + RESTORE_CHUNK]
            args = [str(int(lifespan))]
            for app, connectionId, at in some:
                args += [app, connectionId, repr(at)]
            await self.link.run(REMEMBER, *args)
            # And every node remembers them now (closing nothing).
            message = orjson.dumps({"t": "m", "f": self.node, "k": some})
            await self.link.publish(f"{PREFIX}all", message)
        claimed = 0
        pending = list(self._generations)
        first = True
        while first or pending:
            # Built when sent: a connection that closed meanwhile is skipped.
            chunk = [c for c in pending[:RESTORE_CHUNK] if c in self._generations]
            pending = pending[RESTORE_CHUNK:]
            args: list[str] = [self.node, self._livenessMs, "1" if first else "0"]
            first = False
            byGeneration = {}
            for connection in chunk:
                generation = self._generations[connection]
                byGeneration[generation] = connection
                args += [generation, connection.app, connection.connectionId]
            lost = await self.link.run(RESTORE, *args)
            claimed += len(chunk)
            for generation in lost:
                connection = byGeneration.get(generation.decode())
                if connection is not None and self._generations.get(connection) is not None:
                    self._replaced(
                        connection.app, connection.connectionId, self._generations[connection]
                    )
        since = (self.clock.seconds() - self.local.tokenLifespan) * 1000
        self._remember(await self.link.run(DENIED, repr(since)))
        self.log.info(
            "Cluster node {node}: {count} connections claimed in Redis {address}",
            node=self.node,
            count=claimed,
            address=str(self.address),
        )

    def _remember(self, denied: list[bytes]) -> None:
        for member, at in zip(denied[::2], denied[1::2], strict=True):
            app, _, connectionId = member.decode("utf-8").partition("\0")
            # Remembered, not kicked again: its connections closed back then,
            # and a client back since with a newer token stays.
            self.local.remember(app, connectionId, float(at))

    def _stepFailed(self, failure: Any, step: str) -> None:
        value = getattr(failure, "value", failure)
        # Redis refusing (out of memory, read-only replica, ACL) is the
        # operator's to fix, as Redis being away is: one warning, not a
        # traceback per step; /ready says 503 while heartbeats fail.
        if isinstance(value, RedisUnavailable | txredisapi.ResponseError):
            if not self._down:
                self._down = True
                self.log.warn(
                    "Redis {address} is unreachable ({step}: {reason}); "
                    "serving this node's clients only until it is back",
                    address=str(self.address),
                    step=step,
                    reason=str(value),
                )
            return
        self.log.failure("Cluster step {step} failed", failure, step=step)
