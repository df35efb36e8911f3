# -*- test-case-name: tests.test_tap -*-
"""
Listening on the C{--listen} endpoints, with a clear error when it cannot.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure


class StartupError(Exception):
    """
    The daemon cannot start for a reason the user can fix; the message says it.
    """


def describeAddress(address: object) -> str:
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return str(address)


class Listener(Service):
    """
    Listens on one endpoint while running. Unlike
    L{twisted.application.internet.StreamServerEndpointService} it turns a
    failure to listen into a L{StartupError} naming the endpoint, and it keeps
    the listening port for whoever needs its address (tests on port 0).
    """

    log = Logger()
    port: IListeningPort | None = None

    def __init__(self, description: str, endpoint: IStreamServerEndpoint,
                 factory: IProtocolFactory) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        outcome: list[IListeningPort | Failure] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        # Every server endpoint Twisted ships listens synchronously; a failure
        # must stop the start-up here, before the process looks healthy.
        if not outcome:
            raise StartupError(f"--listen {self.description}: the endpoint did not start listening")
        if isinstance(outcome[0], Failure):
            reason = outcome[0].value
            raise StartupError(f"cannot listen on {self.description}: {reason}")
        self.port = outcome[0]
        self.log.info("Listening on {address} ({endpoint})",
                      address=describeAddress(self.port.getHost()), endpoint=self.description)

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
