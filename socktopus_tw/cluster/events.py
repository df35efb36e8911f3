# -*- test-case-name: tests.cluster.test_event_order -*-
"""
A cluster node's webhook events, posted in the order they happened (SPEC
§7.2), also when a connection id moves from one node to another.

Each node posts to the backend on its own, so two nodes' events race. A
backend that keys events by connection id must still see the old
connection's C{disconnect} before the new one's C{connect}, or it takes an
id that moved for gone. So the node that B{takes} an id posts the old
connection's C{disconnect} (reason C{replaced}) itself, just before its own
C{connect}, and the old node posts nothing for it. Who took what is known
only once Redis has run the claim (L{socktopus_tw.cluster.scripts.CHANGES}):
a node's connects and ends wait for that answer (one round trip), and every
event after them waits behind them, so nothing overtakes.

An L{EventQueue} is that wait: events are posted in order, as soon as
every one before them is. It knows nothing of Redis; the registry holds an
event (L{EventQueue.hold}) while its step runs and settles it with what the
step said (L{Held.settle}).

Bounds: a step waits at most the Redis deadline (2 s), and the queue holds
at most L{EventQueue.maxEvents} events and L{EventQueue.maxBytes} bytes of
client messages; past either, it stops waiting and posts what it holds as
it is (in order, to the webhook sender and its own bounds), rather than
let clients fill the node's memory while Redis is slow.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.logger import Logger

from socktopus_tw.relay.events import REPLACED, IEventSink

#: An event as the sink's method and its arguments:
#: C{("connected", app, connectionId)},
#: C{("disconnected", app, connectionId, reason)} or
#: C{("message", app, connectionId, content)}.
Event = tuple[Any, ...]


class Held:
    """
    One event in an L{EventQueue}, posted once it is settled and every
    event before it has been posted.
    """

    __slots__ = ("events", "queue", "ready", "size")

    def __init__(self, queue: EventQueue, event: Event, ready: bool) -> None:
        self.queue = queue
        self.events = [event]
        self.ready = ready
        # A client message's content: what can be big.
        self.size = len(event[3]) if event[0] == "message" else 0

    def settle(self, taken: bool = False) -> None:
        """
        Redis answered (or will not: C{taken} false). With C{taken}, a
        C{connect} took its id from another node's live connection, whose
        C{disconnect} is posted just before it; a C{disconnect} is of a
        connection another node took that way, which posted it: it is not
        posted here.
        """
        if self.ready:
            return
        self.ready = True
        if taken:
            kind, app, connectionId = self.events[0][:3]
            if kind == "connected":
                self.events.insert(0, ("disconnected", app, connectionId, REPLACED))
            else:
                self.events.clear()
        self.queue.drain()


class EventQueue:
    """
    A node's events, posted to C{sink} in the order they were given, each
    once the ones before it have been.

    @ivar maxEvents: events held at most: a whole node's clients
        reconnecting at once wait for no more than a round trip.
    @ivar maxBytes: bytes of message contents held at most (as many as the
        webhook sender keeps per app).
    """

    log = Logger()
    maxEvents = 100_000
    maxBytes = 64 * 1024 * 1024

    def __init__(self, sink: IEventSink) -> None:
        self.sink = sink
        self._queue: deque[Held] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    def post(self, *event: Any) -> None:
        """
        Post C{event} now, or as soon as the ones held before it are.
        """
        if self._queue:
            self._add(Held(self, event, ready=True))
        else:
            self._send(event)

    def hold(self, *event: Any) -> Held:
        """
        Queue C{event} until the L{Held} returned is settled.
        """
        held = Held(self, event, ready=False)
        self._add(held)
        return held

    def _add(self, held: Held) -> None:
        self._queue.append(held)
        self._bytes += held.size
        if len(self._queue) > self.maxEvents or self._bytes > self.maxBytes:
            # A line per overflow: one per maxEvents events or maxBytes.
            self.log.warn(
                "Webhook events: {count} waiting for Redis' answers, over {limit}"
                " (or {limitBytes} bytes); posted without them",
                count=len(self._queue),
                limit=self.maxEvents,
                limitBytes=self.maxBytes,
            )
            self.releaseAll()

    def drain(self) -> None:
        """
        Post what is settled at the head of the queue.
        """
        queue = self._queue
        while queue and queue[0].ready:
            held = queue.popleft()
            self._bytes -= held.size
            for event in held.events:
                self._send(event)

    def releaseAll(self) -> None:
        """
        Post everything held as it is, without the answers it waits for:
        the node is stopping, or too much is held.
        """
        for held in list(self._queue):
            held.ready = True
        self.drain()

    def _send(self, event: Event) -> None:
        getattr(self.sink, event[0])(*event[1:])
