# -*- test-case-name: tests.relay.test_events -*-
"""
What a relay's clients do, as events for the app's backend (SPEC §7.2).

Events are born in the registry, the one place that knows every reason a
connection ends; an L{IEventSink} (the webhook sender,
L{socktopus_tw.relay.webhooks}) takes them. A sink never blocks and never
fails its caller: it queues, and posts later.
"""

from __future__ import annotations

from zope.interface import Interface

#: Why a connection ended (SPEC §7.2's C{reason}).
CLIENT = "client"  # the client closed, or sent CLOSE
IDLE = "idle"
KICK = "kick"
REPLACED = "replaced"
SHUTDOWN = "shutdown"
BUFFER = "buffer"  # a slow consumer cut off
ERROR = "error"  # a protocol violation, too many frames, or a broken transport

REASONS = (CLIENT, IDLE, KICK, REPLACED, SHUTDOWN, BUFFER, ERROR)


class IEventSink(Interface):
    """
    Takes the events of apps that have a webhook. Each call is cheap and
    returns at once; an app without a webhook is ignored.
    """

    def wants(app: str) -> bool:
        """
        Whether C{app} has a webhook: its clients may send C{DATA:} frames.
        """

    def connected(app: str, connectionId: str) -> None:
        """
        A connection opened (stamped now).
        """

    def message(app: str, connectionId: str, content: str) -> None:
        """
        A client sent C{DATA:<content>}.
        """

    def disconnected(app: str, connectionId: str, reason: str) -> None:
        """
        A connection ended, for one of L{REASONS}.
        """
