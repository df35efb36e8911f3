# -*- test-case-name: tests.relay.test_registry,tests.relay.test_registry_seam -*-
"""
The connection registry: the one place that knows who is connected.

L{IRegistry} is the seam between the relay's edges (the WebSocket layer,
C{/send}, C{/kick}, the home page) and where connections live.
L{LocalRegistry} serves it for one process; a registry that reaches the
connections of other nodes (the cluster over Redis) serves the same
interface, and no caller knows which one it holds.

It is pure domain: no Autobahn, no twisted.web. A connection is any object
providing L{IRelayConnection}; the WebSocket layer registers its protocol on
open and unregisters it on close. Time comes from an injected
L{IReactorTime}, so idle closes and kick deny-lists are tested with
L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from socktopus_tw.logs import listForLog
from socktopus_tw.relay import events
from socktopus_tw.relay.events import IEventSink

if TYPE_CHECKING:
    from socktopus_tw.metrics import Metrics


class IRelayConnection(Interface):
    """
    One live client connection, as the registry sees it.
    """

    app = Attribute("The canonical (lower-case) app name.")
    connectionId = Attribute("The connection id chosen by the backend.")

    def deliver(payload: bytes) -> bool:
        """
        Queue one UTF-8 text frame. Return C{False} when the connection cannot
        take it (it is closing, or its client stopped reading).
        """

    def keepalive() -> None:
        """
        Send a WebSocket ping, so a quiet but live client answers.
        """

    def evict() -> None:
        """
        Send C{CLOSE} and close: the server closes for its own reasons.
        """


class IRegistry(Interface):
    """
    Who is connected, and the ways to reach them.

    Deliveries and kicks are I{dispatched} in call order before a method
    returns, so frames reach each connection in the order C{/send} accepted
    them. Their outcomes may come later: C{deliverBatch}, C{kick} and
    C{presence} return their result or, when other nodes must answer, a
    L{Deferred} of it. L{LocalRegistry} always answers at once.
    """

    def register(connection: IRelayConnection) -> None:
        """
        Add a newly opened connection, replacing (and evicting) any live one
        with the same app and id.
        """

    def unregister(
        connection: IRelayConnection, reason: str = events.CLIENT, closing: bool = False
    ) -> None:
        """
        A connection has closed, for one of L{events.REASONS} (unless the
        registry closed it: then for the registry's reason). With
        C{closing}, it has ended but its close is still under way: it is
        gone for everything but shutdown, which waits for the C{unregister}
        that follows once it is closed.
        """

    def activity(connection: IRelayConnection) -> None:
        """
        The client sent something: it is not idle.
        """

    def acceptsMessages(app: str) -> bool:
        """
        Whether C{app}'s clients may send C{DATA:} frames (it has a webhook).
        """

    def message(connection: IRelayConnection, content: str) -> None:
        """
        The client sent C{DATA:<content>}: a C{message} event.
        """

    def deliver(app: str, connectionId: str, payload: bytes) -> bool | Deferred[bool]:
        """
        Hand one frame to a connection: whether it took it.
        """

    def deliverBatch(
        app: str, recipients: list[str], payloads: list[bytes | None]
    ) -> list[bool] | Deferred[list[bool]]:
        """
        L{deliver} for many frames of one app, in order: one outcome each. A
        C{None} payload fails without being looked up (over the size cap).
        """

    def kick(
        app: str, connectionIds: list[str]
    ) -> tuple[list[str], list[str]] | Deferred[tuple[list[str], list[str]]]:
        """
        Close these connections and refuse their tokens stamped at or before
        now: the ids that were connected and those that were not.
        """

    def isKicked(app: str, connectionId: str, stampMilliseconds: float) -> bool:
        """
        Whether a token with this stamp was issued before a kick of this id.
        """

    def presence(
        app: str, connectionIds: list[str] | None = None
    ) -> tuple[list[str], list[str]] | Deferred[tuple[list[str], list[str]]]:
        """
        Which of C{connectionIds} are connected and which are not, in their
        order; without ids, every connected id of C{app} (and no others).
        """

    def count(app: str | None = None) -> int:
        """
        How many clients are connected, to one app or in all.
        """

    def counts() -> dict[str, int]:
        """
        Connected clients per app, for apps that have any.
        """

    def nodes() -> int:
        """
        How many nodes are live: 1 for a registry of one process.
        """


@implementer(IRegistry)
class LocalRegistry(Service):
    """
    Live connections of this process by app and id, idle closes, and the
    kick deny-list.

    @ivar idleTimeout: seconds of silence from a client before it is closed;
        it is pinged after half of that.
    @ivar tokenLifespan: seconds a token is valid; a kick's deny entry lives
        that long, after which tokens stamped before the kick are expired anyway.
    """

    log = Logger()
    name = "registry"
    shutdownTimeout = 5.0

    def __init__(
        self,
        clock: IReactorTime,
        idleTimeout: float = 20.0,
        tokenLifespan: float = 5.0,
        metrics: Metrics | None = None,
        events: IEventSink | None = None,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        #: Told of connects, client messages and disconnects (with why).
        self.events = events
        self.idleTimeout = idleTimeout
        self.tokenLifespan = tokenLifespan
        self._apps: dict[str, dict[str, IRelayConnection]] = {}
        # Connections in order of their last activity, oldest first, so the
        # sweep only looks at the head.
        self._lastSeen: OrderedDict[IRelayConnection, float] = OrderedDict()
        self._pinged: set[IRelayConnection] = set()
        # Evicted connections whose close has not finished yet: shutdown
        # waits for them.
        self._closing: set[IRelayConnection] = set()
        # (app, connectionId) -> kick time in milliseconds, oldest first.
        self._kicked: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._drained: list[Deferred[None]] = []
        # Often enough that a close comes at most a quarter late, and at most
        # once a second: each sweep only looks at the stale head of _lastSeen.
        self.sweepInterval = min(1.0, idleTimeout / 4)
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock
        self._stopping = False

    # -- lifecycle -------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._sweeper.start(self.sweepInterval, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Send C{CLOSE} to every client and fire once all have closed.
        """
        super().stopService()
        self._stopping = True
        if self._sweeper.running:
            self._sweeper.stop()
        everyone = [c for conns in self._apps.values() for c in conns.values()]
        self.log.info("Shutting down: closing {count} connections", count=len(everyone))
        for connection in everyone:
            self._evict(connection, events.SHUTDOWN)
        # A client that never finishes the close handshake is dropped by the
        # WebSocket layer's own timeout; this one only keeps shutdown bounded.
        d = self.whenDrained()
        d.addTimeout(self.shutdownTimeout, self.clock)
        d.addErrback(lambda f: f.trap(TimeoutError) and None)
        return d

    def whenDrained(self) -> Deferred[None]:
        """
        A Deferred that fires when no connection is open or closing.
        """
        if not self._apps and not self._closing:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    # -- connections -----------------------------------------------------

    def register(self, connection: IRelayConnection) -> None:
        """
        Add a newly opened connection, replacing (and evicting) any live one
        with the same app and id.
        """
        if self._stopping:
            self._closing.add(connection)
            connection.evict()
            return
        app, connectionId = connection.app, connection.connectionId
        previous = self.connection(app, connectionId)
        if previous is not None:
            self.log.info(
                "Replacing connection {app}/{connectionId}", app=app, connectionId=connectionId
            )
            self._evict(previous, events.REPLACED)
        self._apps.setdefault(app, {})[connectionId] = connection
        self._lastSeen[connection] = self.clock.seconds()
        if self.metrics is not None:
            self.metrics.connects.labels(app).inc()
        self.log.info("Connected {app}/{connectionId}", app=app, connectionId=connectionId)
        if self.events is not None:
            self.events.connected(app, connectionId)

    def unregister(
        self, connection: IRelayConnection, reason: str = events.CLIENT, closing: bool = False
    ) -> None:
        """
        A connection has closed. Only the connection that is registered under
        its id is removed: a replaced connection that finishes closing after
        its successor opened must not drop the successor (the Go original did).
        One the registry closed was told of (with its reason) when it was.
        """
        if connection in self._closing:
            self._closing.discard(connection)
        elif self._forget(connection):
            if self.events is not None:
                self.events.disconnected(connection.app, connection.connectionId, reason)
            if closing:
                self._closing.add(connection)
                return
        else:
            return
        self.log.info(
            "Disconnected {app}/{connectionId}",
            app=connection.app,
            connectionId=connection.connectionId,
        )
        if self.metrics is not None:
            self.metrics.disconnects.labels(connection.app).inc()
        if self._drained and not self._apps and not self._closing:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def activity(self, connection: IRelayConnection) -> None:
        """
        The client sent something: it is not idle.
        """
        if connection in self._lastSeen:
            self._lastSeen[connection] = self.clock.seconds()
            self._lastSeen.move_to_end(connection)
            self._pinged.discard(connection)

    def acceptsMessages(self, app: str) -> bool:
        """
        Whether C{app}'s clients may send C{DATA:} frames: it has a webhook.
        """
        return self.events is not None and self.events.wants(app)

    def message(self, connection: IRelayConnection, content: str) -> None:
        """
        The client sent C{DATA:<content>}: a C{message} event.
        """
        if self.events is not None and connection in self._lastSeen:
            self.events.message(connection.app, connection.connectionId, content)

    def deliver(self, app: str, connectionId: str, payload: bytes) -> bool:
        """
        Hand one frame to a connection; C{False} when it is not connected or
        cannot take it.
        """
        return self.deliverBatch(app, [connectionId], [payload])[0]

    def deliverBatch(
        self, app: str, recipients: list[str], payloads: list[bytes | None]
    ) -> list[bool]:
        """
        L{deliver} for many frames of one app, in order; a C{None} payload
        fails without being looked up (e.g. over the size cap).
        """
        find = self._apps.get(app, {}).get
        outcomes = []
        for connectionId, payload in zip(recipients, payloads, strict=True):
            connection = find(connectionId) if payload is not None else None
            outcomes.append(connection is not None and connection.deliver(payload))
        return outcomes

    def connection(self, app: str, connectionId: str) -> IRelayConnection | None:
        """
        The live connection of C{app} with that id, if any.
        """
        return self._apps.get(app, {}).get(connectionId)

    # -- kicks -----------------------------------------------------------

    def kick(self, app: str, connectionIds: Iterable[str]) -> tuple[list[str], list[str]]:
        """
        Close these connections and refuse their tokens stamped at or before
        now. Return the ids that were connected and those that were not.
        """
        kicked, notConnected = self.refuse(app, connectionIds, self.clock.seconds() * 1000)
        self.logKick(app, kicked, notConnected)
        return kicked, notConnected

    def remember(self, app: str, connectionId: str, atMilliseconds: float) -> None:
        """
        Refuse this id's tokens stamped at or before C{atMilliseconds},
        closing nothing: a kick learnt again (in a cluster, after Redis came
        back), whose connections were closed when it happened.
        """
        key = (app, connectionId)
        if self._kicked.get(key, -1.0) < atMilliseconds:
            self._kicked[key] = atMilliseconds
            self._kicked.move_to_end(key)

    def kicks(self) -> list[tuple[str, str, float]]:
        """
        The kicks whose tokens may still be valid: (app, id, time in ms).
        """
        return [(app, connectionId, at) for (app, connectionId), at in self._kicked.items()]

    def refuse(
        self, app: str, connectionIds: Iterable[str], atMilliseconds: float
    ) -> tuple[list[str], list[str]]:
        """
        L{kick} without its log line, for a kick stamped C{atMilliseconds}
        (by this node or, in a cluster, another): the ids connected here and
        those that were not.
        """
        kicked, notConnected = [], []
        connections = self._apps.get(app, {})
        for connectionId in connectionIds:
            self.remember(app, connectionId, atMilliseconds)
            connection = connections.get(connectionId)
            if connection is None:
                notConnected.append(connectionId)
            else:
                kicked.append(connectionId)
                self._evict(connection, events.KICK)
        return kicked, notConnected

    def logKick(self, app: str, kicked: list[str], notConnected: list[str]) -> None:
        """
        The one line a kick is logged with.
        """
        # The ids come from the request: listForLog cuts and escapes them.
        self.log.info(
            "Kick for {app}: kicked {kicked}; not connected: {notConnected}",
            app=app,
            kicked=listForLog(kicked),
            notConnected=listForLog(notConnected),
            kickedCount=len(kicked),
            notConnectedCount=len(notConnected),
        )

    def isKicked(self, app: str, connectionId: str, stampMilliseconds: float) -> bool:
        """
        Whether a token with this stamp was issued before a kick of this id.
        """
        kickedAt = self._kicked.get((app, connectionId))
        return kickedAt is not None and stampMilliseconds <= kickedAt

    # -- presence --------------------------------------------------------

    def presence(
        self, app: str, connectionIds: list[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """
        Which of C{connectionIds} are connected and which are not, in their
        order; without ids, every connected id of C{app}.
        """
        connections = self._apps.get(app, {})
        if connectionIds is None:
            return list(connections), []
        connected, notConnected = [], []
        for connectionId in connectionIds:
            (connected if connectionId in connections else notConnected).append(connectionId)
        return connected, notConnected

    # -- counts ----------------------------------------------------------

    def count(self, app: str | None = None) -> int:
        """
        How many clients are connected, to one app or in all.
        """
        if app is not None:
            return len(self._apps.get(app, ()))
        return sum(map(len, self._apps.values()))

    def counts(self) -> dict[str, int]:
        """
        Connected clients per app, for apps that have any.
        """
        return {app: len(conns) for app, conns in self._apps.items() if conns}

    def nodes(self) -> int:
        """
        One process is one node.
        """
        return 1

    # -- housekeeping ----------------------------------------------------

    def sweep(self) -> None:
        """
        Ping clients quiet for half the idle timeout, close those quiet for
        all of it, and forget kicks whose tokens have expired anyway.
        """
        now = self.clock.seconds()
        pingBefore = now - self.idleTimeout / 2
        closeBefore = now - self.idleTimeout
        idle, quiet = [], []
        for connection, seen in self._lastSeen.items():
            if seen > pingBefore:
                break
            if seen <= closeBefore:
                idle.append(connection)
            elif connection not in self._pinged:
                quiet.append(connection)
        for connection in quiet:
            self._pinged.add(connection)
            connection.keepalive()
        for connection in idle:
            self.log.info(
                "Closing idle connection {app}/{connectionId}",
                app=connection.app,
                connectionId=connection.connectionId,
            )
            self._evict(connection, events.IDLE)

        # A token stamped at or before the kick is refused by its age once
        # the lifespan has passed, so the entry is no longer needed.
        forgetBefore = (now - self.tokenLifespan) * 1000
        while self._kicked:
            key, kickedAt = next(iter(self._kicked.items()))
            if kickedAt >= forgetBefore:
                break
            del self._kicked[key]

    def _forget(self, connection: IRelayConnection) -> bool:
        connections = self._apps.get(connection.app)
        if connections is None or connections.get(connection.connectionId) is not connection:
            return False
        del connections[connection.connectionId]
        if not connections:
            del self._apps[connection.app]
        self._lastSeen.pop(connection, None)
        self._pinged.discard(connection)
        return True

    def evict(self, connection: IRelayConnection, reason: str = events.REPLACED) -> None:
        """
        Send C{CLOSE} and close one connection: in a cluster, when another
        node took its id.
        """
        if self.connection(connection.app, connection.connectionId) is connection:
            self._evict(connection, reason)

    def _evict(self, connection: IRelayConnection, reason: str) -> None:
        # Forgotten first, so nothing more is delivered to it; remembered as
        # closing, so shutdown can wait for its close to finish. The close may
        # complete synchronously and call unregister() from inside evict().
        if self._forget(connection) and self.events is not None:
            self.events.disconnected(connection.app, connection.connectionId, reason)
        self._closing.add(connection)
        connection.evict()
