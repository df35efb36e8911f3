"""
Test doubles of our own interfaces, for the tests that drive the relay
without sockets.
"""

from __future__ import annotations

from zope.interface import implementer

from socktopus_tw.relay.registry import IRelayConnection, LocalRegistry


@implementer(IRelayConnection)
class FakeConnection:
    """
    A connection that records what the registry asks of it.

    @ivar closesAtOnce: when true, L{evict} finishes the close synchronously
        by calling C{registry.unregister}, as a transport that is already
        gone would; otherwise the close finishes when L{finishClose} is called.
    """

    def __init__(
        self,
        registry: LocalRegistry,
        app: str,
        connectionId: str,
        closesAtOnce: bool = False,
        accepts: bool = True,
    ) -> None:
        self.registry = registry
        self.app = app
        self.connectionId = connectionId
        self.closesAtOnce = closesAtOnce
        self.accepts = accepts
        self.delivered: list[bytes] = []
        self.keepalives = 0
        self.evictions = 0

    def deliver(self, payload: bytes) -> bool:
        if not self.accepts:
            return False
        self.delivered.append(payload)
        return True

    def keepalive(self) -> None:
        self.keepalives += 1

    def evict(self) -> None:
        self.evictions += 1
        if self.closesAtOnce:
            self.finishClose()

    def finishClose(self) -> None:
        """
        The close handshake is over: tell the registry, as the protocol does.
        """
        self.registry.unregister(self)

    def __repr__(self) -> str:
        return f"<FakeConnection {self.app}/{self.connectionId} at {id(self):#x}>"
