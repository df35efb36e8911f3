# -*- test-case-name: tests.relay.test_upgrade,tests.http.test_fastpath -*-
"""
C{GET /recieve?token=TOKEN} (and C{/receive}): the token is checked before
the upgrade, refusals are JSON as SPEC §3.2 lists them, and an admitted
request's connection is handed to a L{RelayProtocol}.

It follows Autobahn's L{autobahn.twisted.resource.WebSocketResource.render}
(build the protocol, give it the transport, replay the request's head for
Autobahn to parse and answer the handshake), with two differences: the
token is checked first, so refusals are the relay's JSON rather than
Autobahn's HTML; and the hand-over is the channel's
(L{socktopus_tw.http.site.SocktopusChannel.switchProtocols}), which also
passes on the frames that arrived in the same read as the request.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress
from twisted.web.server import Request
from zope.interface import implementer

from socktopus_tw.errors import RelayError
from socktopus_tw.http.fastpath import IDirectUpgrade
from socktopus_tw.http.respond import HANDLED, JsonResource
from socktopus_tw.relay.admission import Gatekeeper
from socktopus_tw.relay.tokens import MalformedToken
from socktopus_tw.relay.websocket import RelayFactory, RelayProtocol


class UpgradeRequired(RelayError):
    status = 426
    message = "Upgrade required"


@implementer(IDirectUpgrade)
class ReceiveResource(JsonResource):
    """
    The relay's WebSocket endpoint. Plain upgrades come to L{accept} from the
    fast path (L{socktopus_tw.http.fastpath}); any other request for it
    through twisted.web, to L{json_GET}.
    """

    path = "/recieve"

    def __init__(self, gatekeeper: Gatekeeper, factory: RelayFactory) -> None:
        super().__init__()
        self.gatekeeper = gatekeeper
        self.factory = factory

    def json_GET(self, request: Request) -> object:
        tokens = request.args.get(b"token")
        if not tokens:
            raise MalformedToken()
        try:
            token = tokens[0].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedToken() from None
        protocol = self.accept(token, request.getClientAddress())
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.lower() != b"websocket" or request.channel.transport is None:
            raise UpgradeRequired()
        request.channel.switchProtocols(request, protocol, requestHead(request))
        return HANDLED

    def accept(self, token: str, peer: IAddress | None, key: bytes | None = None) -> RelayProtocol:
        """
        The protocol for the connection C{token} admits, or the refusal;
        given the handshake's checked C{key}, it answers the handshake when
        connected (see L{RelayProtocol.handshakeKey}).
        """
        app, connectionId = self.gatekeeper.admit(token)
        protocol = self.factory.buildProtocol(peer)
        protocol.app = app
        protocol.connectionId = connectionId
        protocol.handshakeKey = key
        return protocol


def requestHead(request: Request) -> bytes:
    """
    The head of C{request} as it came, for Autobahn to parse.
    """
    head = [request.method + b" " + request.uri + b" HTTP/1.1"]
    for name, values in request.requestHeaders.getAllRawHeaders():
        head.extend(name + b": " + value for value in values)
    return b"\r\n".join(head) + b"\r\n\r\n"
