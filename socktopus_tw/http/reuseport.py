# -*- test-case-name: tests.deploy.test_reuseport -*-
"""
C{reuseport:PORT[:interface=ADDRESS][:backlog=N]}: a TCP server endpoint
whose socket sets C{SO_REUSEPORT}, so that several daemons on one machine
(one per core) listen on one port and the kernel spreads new connections
over them. IPv6 when the interface is an IPv6 address (its colons escaped,
C{interface=\\:\\:1}), as Twisted's C{tcp6:}; else IPv4, as C{tcp:}.

Twisted's C{tcp:} endpoint sets only C{SO_REUSEADDR} and has no option for
more. Rather than subclass its C{Port} (private API), the endpoint binds the
socket itself and hands it over with L{IReactorSocket.adoptStreamPort}, the
public way in: what listens is then an ordinary L{twisted.internet.tcp.Port}
and every connection an ordinary L{twisted.internet.tcp.Server}, so the fast
path and its direct writes (L{socktopus_tw.http.writing}) treat them exactly
as they treat C{tcp:}'s.

On Linux (3.9 and later) every socket sharing the port must set the option
and belong to the same user; a socket on the port without it (a C{tcp:}
daemon, another program) makes the bind fail with C{EADDRINUSE}, which the
daemon reports as an address in use. Other systems accept the option but do
not all spread connections (macOS and the BSDs give them to one socket).

Registered for L{serverFromString <twisted.internet.endpoints.serverFromString>}
by C{twisted/plugins/socktopus_endpoints.py}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, execute
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

#: Twisted's own default, as for C{tcp:}.
DEFAULT_BACKLOG = 50

USAGE = (
    "the form is reuseport:PORT[:interface=ADDRESS][:backlog=N], "
    "e.g. reuseport:8080:interface=127.0.0.1"
)


@implementer(IStreamServerEndpoint)
class ReusePortServerEndpoint:
    """
    Listens on a TCP port that other C{SO_REUSEPORT} sockets may share.
    Listening is synchronous: the returned L{Deferred} has fired when
    L{listen} returns, as with every server endpoint Twisted ships.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        backlog: int = DEFAULT_BACKLOG,
        interface: str = "",
    ) -> None:
        """
        @param reactor: an L{IReactorSocket} provider (every POSIX reactor).
        @param interface: the address to bind, C{""} for every IPv4 one.
        """
        self._reactor = reactor
        # Named as Twisted's TCP endpoints name theirs: the option checks
        # (socktopus_tw.settings.checkEndpoint) read it to refuse a port out
        # of range before anything starts.
        self._port = port
        self._backlog = backlog
        self._interface = interface

    @property
    def family(self) -> socket.AddressFamily:
        """
        The socket's address family, from the interface: IPv6 for an IPv6 address.
        """
        return socket.AF_INET6 if isIPv6Address(self._interface) else socket.AF_INET

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with C{protocolFactory}; fails with L{CannotListenError} when
        the address cannot be bound (in use without C{SO_REUSEPORT}, not of
        this machine, a privileged port).
        """
        return execute(self._listen, protocolFactory)

    def _listen(self, protocolFactory: IProtocolFactory) -> IListeningPort:
        family = self.family
        listening = socket.socket(family, socket.SOCK_STREAM)
        try:
            try:
                # SO_REUSEADDR too, as tcp: sets it: a restarted daemon can
                # bind while the old one's connections sit in TIME_WAIT.
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                listening.bind((self._interface, self._port))
                listening.listen(self._backlog)
            except (OSError, OverflowError) as e:
                raise CannotListenError(self._interface, self._port, e) from None
            # The reactor's own ports are non-blocking: accept() must never wait.
            listening.setblocking(False)
            return self._reactor.adoptStreamPort(listening.fileno(), family, protocolFactory)
        finally:
            # adoptStreamPort listens on a duplicate of the descriptor.
            listening.close()

    def __repr__(self) -> str:
        return f"<ReusePortServerEndpoint {self._interface or 'any'} port {self._port}>"


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ReusePortParser:
    """
    Parses C{reuseport:PORT[:interface=ADDRESS][:backlog=N]}. A mistake is a
    L{ValueError} saying what the string should look like; a port out of
    range is left for the option checks to refuse, as for C{tcp:}.
    """

    prefix = "reuseport"

    def parseStreamServer(self, reactor: Any, *args: str, **kwargs: str) -> ReusePortServerEndpoint:
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("this system has no SO_REUSEPORT; use tcp: instead")
        unknown = sorted(set(kwargs) - {"interface", "backlog"})
        if unknown:
            raise ValueError(f"reuseport: has no option {unknown[0]}=; {USAGE}")
        if len(args) != 1:
            # Most often an address put first, as other programs write it.
            raise ValueError(USAGE)
        return ReusePortServerEndpoint(
            reactor,
            _number(args[0], "the port must be a number from 0 to 65535"),
            _number(kwargs.get("backlog", str(DEFAULT_BACKLOG)), "backlog= must be a number"),
            kwargs.get("interface", ""),
        )


def _number(text: str, complaint: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{complaint}, not {text!r}") from None
