# -*- test-case-name: tests.test_tap,tests.deploy.test_process,tests.deploy.test_first_contact -*-
"""
The daemon process' lifecycle: listening with a clear error when it cannot,
starting up with one line instead of a traceback (in daemon mode too), and
shutting down in order (stop listening, drain the sites, then the rest).

Nothing here knows the web layer: a listener's factory is drained if it has
a C{drain(timeout)} method (L{Drainable}).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
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


def complain(message: str, stream: IO[str] | None = None) -> None:
    """
    One line on the real stderr: by the time services start, twistd has
    redirected C{sys.stderr} into the log (and, daemonised, fd 2 to
    C{/dev/null}: then C{stream} is the terminal's, see L{Startup}).
    """
    out = stream or sys.__stderr__ or sys.stderr
    out.write(f"socktopus: {message}\n")
    out.flush()


class StartupFailed(SystemExit, Exception):
    """
    Ends a start-up that failed for a reason already told to the user.

    twistd reports only an C{Exception} raised while it starts the services:
    it writes it to the pipe its parent process waits on in daemon mode (so
    that process exits 1 at once) and removes its pidfile. A plain
    L{SystemExit} slips past both: the parent waits forever and the pidfile
    stays. Being both, this one is reported by twistd, which then re-raises
    it, and the process ends with status 1 and no traceback.

    Its text is what twistd's parent prints (cut at 100 bytes) after the
    full line, C{"An error has occurred: b'...'"}: a pointer to that line
    once the user was told, else the message itself.
    """

    def __init__(self, message: str, told: bool = False) -> None:
        super().__init__(1)
        self.message = message
        self.told = told

    def __str__(self) -> str:
        return "Socktopus did not start: see the line above" if self.told else self.message


class Startup:
    """
    What a start-up owes the user should it fail, prepared before twistd
    daemonises (L{socktopus_tw.tap.Options} makes it): where to say what is
    wrong, and the files the option checks created, to take back.

    @ivar stderr: a copy of the stderr twistd was started with, when it is
        about to daemonise; the daemon's own fd 2 is C{/dev/null} by the time
        services start. Closed once the start is over, so the daemon does not
        hold its caller's terminal or pipe open.
    @ivar created: absolute paths of files created while checking the options
        (the SQLite file the database check makes).
    """

    log = Logger()

    def __init__(self, stderr: IO[str] | None = None, created: Sequence[str] = ()) -> None:
        self.stderr = stderr
        self.created = list(created)

    @classmethod
    def beforeDaemonising(cls, created: Sequence[str] = ()) -> Startup:
        """
        A L{Startup} for a process twistd is about to daemonise.
        """
        try:
            stderr = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="backslashreplace")
        except OSError:
            stderr = None
        return cls(stderr, created)

    def fail(self, message: str) -> StartupFailed:
        """
        Tell the user, take back what the start created, and return the
        exception that ends the process.
        """
        daemonised = self.stderr is not None
        if daemonised:
            # The log is then the only other place it can be read later.
            self.log.critical("{reason}", reason=message)
        try:
            complain(message, self.stderr)
            told = True
        except (OSError, ValueError):
            told = False
        self.done()
        for path in self.created:
            for name in (path, path + "-journal", path + "-wal", path + "-shm"):
                try:
                    os.remove(name)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    self.log.warn("Could not remove {name}: {error}", name=name, error=e)
        self.created = []
        return StartupFailed(message, told=told and daemonised)

    def done(self) -> None:
        """
        The start is over: let go of the caller's stderr.
        """
        stderr, self.stderr = self.stderr, None
        if stderr is not None:
            try:
                stderr.close()
            except OSError:
                pass


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


def listenFailure(description: str, error: BaseException) -> str:
    """
    Why listening failed, as its user can act on it. Twisted's own text
    (C{Couldn't listen on any:8080: [Errno 98] Address already in use.}) is
    kept for anything uncommon.
    """
    socketError = getattr(error, "socketError", None)
    code = getattr(socketError if socketError is not None else error, "errno", None)
    if code == errno.EADDRINUSE:
        return (
            "the address is already in use: another program (or another Socktopus) "
            "listens there; stop it or choose another --listen"
        )
    if code == errno.EACCES:
        if description.startswith("unix:"):
            return "permission denied: the socket's directory is not writable by this user"
        return "permission denied: a port below 1024 needs root or CAP_NET_BIND_SERVICE"
    if code == errno.EADDRNOTAVAIL:
        return "this machine has no such address (see `ip address`; interface=0.0.0.0 is all)"
    if code == errno.ENOENT and description.startswith("unix:"):
        return "the socket's directory does not exist"
    return str(error)


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
            reason = listenFailure(self.description, outcome[0].value)
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
    A start-up failure the user can fix ends the process with one line on
    stderr, not a traceback, and exit status 1, also when twistd daemonises
    (L{Startup}, L{StartupFailed}).
    """

    log = Logger()
    #: Seconds shutdown waits for in-flight requests before going on.
    drainTimeout = 10.0

    #: The log observer for twistd to use when it was given none (see
    #: L{socktopus_tw.logs.defaultObserver}), or L{None}.
    logObserver: ILogObserver | None = None

    def __init__(self, apps: Apps, startup: Startup | None = None) -> None:
        super().__init__()
        self.apps = apps
        self.startup = startup if startup is not None else Startup()

    def setServiceParent(self, parent: IServiceCollection) -> None:
        # twistd makes an application for the plugin's service and starts
        # logging after: an observer the application has is the one it uses
        # when given no --logger (as a .tac file's setComponent would do).
        if self.logObserver is not None and isinstance(parent, Componentized):
            if parent.getComponent(ILogObserver) is None:
                parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        # Listen first: a port in use ends the start before the database is
        # migrated (or a SQLite file made), so a failed start leaves nothing.
        # Nothing is accepted before the reactor runs, after the migration.
        children = sorted(self, key=lambda child: not isinstance(child, Listener))
        try:
            for child in children:
                child.privilegedStartService()
        except StartupError as e:
            raise self.startup.fail(str(e)) from None

    def startService(self) -> None:
        self.log.info(
            "Socktopus {version} starting, serving {count} apps: {apps}",
            version=socktopus_tw.__version__,
            count=len(self.apps),
            apps=", ".join(self.apps.names()) or "none",
        )
        try:
            super().startService()
        except StartupError as e:
            raise self.startup.fail(str(e)) from None
        self.startup.done()

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
        rest = [c for c in children if c not in listeners]
        # The webhooks last: the registry's shutdown makes their last events
        # (every client's disconnect, once its close is done).
        last = [c for c in rest if c.name == "webhooks"]
        await gatherResults([maybeDeferred(c.stopService) for c in rest if c not in last])
        await gatherResults([maybeDeferred(c.stopService) for c in last])


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
