# -*- test-case-name: tests.test_tap,tests.deploy.test_process -*-
"""
The daemon process' lifecycle: listening with a clear error when it cannot,
starting up with one line instead of a traceback, and shutting down in
order (stop listening, drain the sites, then the rest).

Nothing here knows the web layer: a listener's factory is drained if it has
a C{drain(timeout)} method (L{Drainable}).
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from twisted.application.service import MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

import socktopus_tw
from socktopus_tw.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from socktopus_tw.apps import Apps


@runtime_checkable
class Drainable(Protocol):
    """
    A factory that can let its in-flight work finish before shutdown goes on.
    Structural: a site is one by having the method, so this module need not
    import the web layer.
    """

    def drain(self, timeout: float) -> Awaitable[None]:
        """
        Finish in-flight requests, waiting at most C{timeout} seconds.
        """


def complain(message: str) -> None:
    """
    One line on the real stderr: by the time services start, twistd has
    redirected C{sys.stderr} into the log.
    """
    (sys.__stderr__ or sys.stderr).write(f"socktopus: {message}\n")


def describeAddress(address: object) -> str:
    """
    An address as people write it: C{127.0.0.1:8080}, C{[::1]:8080}, a socket path.
    """
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

    def __init__(
        self, description: str, endpoint: IStreamServerEndpoint, factory: IProtocolFactory
    ) -> None:
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
        self.log.info(
            "Listening on {address} ({endpoint})",
            address=describeAddress(self.port.getHost()),
            endpoint=self.description,
        )

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


class SocktopusService(MultiService):
    """
    The daemon: its children are composed by L{socktopus_tw.tap.makeService}.
    A start-up failure the user can fix ends the process with one line, not a
    traceback.
    """

    log = Logger()
    #: Seconds shutdown waits for in-flight requests before going on.
    drainTimeout = 10.0

    def __init__(self, apps: Apps) -> None:
        super().__init__()
        self.apps = apps

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except StartupError as e:
            complain(str(e))
            raise SystemExit(1) from None

    def startService(self) -> None:
        self.log.info(
            "Socktopus {version} starting, serving {count} apps: {apps}",
            version=socktopus_tw.__version__,
            count=len(self.apps),
            apps=", ".join(self.apps.names()) or "none",
        )
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop in order: stop accepting, let in-flight requests finish, then
        the rest (the registry sends every client CLOSE; the pools close).
        """
        self.log.info("Socktopus stopping")
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        children = list(reversed(list(self)))
        listeners = [c for c in children if isinstance(c, Listener)]
        await gatherResults([maybeDeferred(c.stopService) for c in listeners])
        # Several listeners may serve one site; drain each site once.
        for factory in {listener.factory for listener in listeners}:
            if isinstance(factory, Drainable):
                await factory.drain(self.drainTimeout)
        await gatherResults([maybeDeferred(c.stopService) for c in children if c not in listeners])


class StopOnTerm(Service):
    """
    Make C{SIGTERM} a plain stop. twistd otherwise re-raises the signal after
    shutting down, so the process "dies of SIGTERM"; a stop on request that
    went well should exit 0. Installed after the reactor's own handler, which
    it replaces.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._terminate)

    def _terminate(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reactor.stop)
