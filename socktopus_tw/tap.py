# -*- test-case-name: tests.test_tap -*-
"""
C{twistd socktopus}: the command-line options and the composition of the
daemon's services. No logic of its own lives here.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

import socktopus_tw
from socktopus_tw.accounts.api import install as installAccounts
from socktopus_tw.accounts.mail import Mailer, parseSmtpUrl
from socktopus_tw.accounts.passwords import Passwords
from socktopus_tw.accounts.recaptcha import DEFAULT_VERIFY_URL, Recaptcha, loadTrustRoot
from socktopus_tw.accounts.rules import checkEmail
from socktopus_tw.accounts.service import Accounts
from socktopus_tw.apps import Apps
from socktopus_tw.db import (
    DEFAULT_DATABASE,
    Database,
    DatabaseError,
    DatabaseService,
    checkDatabase,
    openPool,
    parseDatabaseUrl,
)
from socktopus_tw.environment import EnvironmentError_, loadEnvironment
from socktopus_tw.errors import ApiError
from socktopus_tw.fastpath import FastPathSite
from socktopus_tw.health import Health, Ready
from socktopus_tw.listening import Listener, StartupError
from socktopus_tw.metrics import Metrics, MetricsResource
from socktopus_tw.relay.api import KickResource, SendResource
from socktopus_tw.relay.home import HomeResource
from socktopus_tw.relay.registry import Registry
from socktopus_tw.relay.websocket import Gatekeeper, ReceiveResource, RelayFactory
from socktopus_tw.web import Root, SocktopusSite

ENV_PREFIX = "SOCKTOPUS_"
DEFAULT_PORT = 8080

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024,
          "m": 1024**2, "mb": 1024**2, "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def seconds(text: str) -> float:
    """
    A positive number of seconds, e.g. C{5} or C{0.5}.
    """
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < value < 10**6:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def size(text: str) -> int:
    """
    A positive number of bytes, with an optional unit: C{1048576}, C{1MiB}, C{64k}.
    """
    number = text.strip().rstrip("bBiI" + "kKmMgG")
    unit = text.strip()[len(number) :].lower()
    try:
        value = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError, OverflowError):
        raise ValueError("expected a size in bytes, e.g. 1048576, 64KiB or 16MiB") from None
    if value <= 0:
        raise ValueError("expected a size greater than 0")
    return value


@dataclass(frozen=True)
class Setting:
    """
    One option with a value: its default, its parser, and its help.
    """

    name: str
    default: str | None
    parse: Callable[[str], Any]
    help: str

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")


def bcryptRounds(text: str) -> int:
    try:
        rounds = int(text)
    except ValueError:
        rounds = 0
    if not 4 <= rounds <= 31:
        raise ValueError("expected a bcrypt cost from 4 to 31 (each step doubles the time)")
    return rounds


def httpUrl(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return text


def localOrHttpUrl(text: str) -> str:
    if text.startswith("/"):
        return text
    return httpUrl(text)


def emailAddress(text: str) -> str:
    return checkEmail(text) and text


SETTINGS = [
    Setting("database", DEFAULT_DATABASE, str,
            "sqlite:PATH or mysql://USER:PASSWORD@HOST:PORT/DBNAME[?unix_socket=PATH]."),
    Setting("token-lifespan", "5", seconds,
            "Seconds a relay token is valid after (and before) its stamp."),
    Setting("idle-timeout", "20", seconds,
            "Seconds of silence after which a client connection is closed."),
    Setting("max-body-size", "16MiB", size, "Largest request body; larger is a 413."),
    Setting("max-message-size", "1MiB", size,
            "Largest content of one relayed message; larger messages fail."),
    Setting("max-client-buffer", "8MiB", size,
            "Unsent data one client may have queued before it is cut off."),
    Setting("public-url", "http://localhost:8080", httpUrl,
            "The daemon's public base URL, used in mailed links."),
    Setting("smtp", None, parseSmtpUrl,
            "smtp://[USER:PASSWORD@]HOST:PORT[?starttls=1]: mail registration codes "
            "(without it, users are registered at once)."),
    Setting("mail-from", None, emailAddress, "The From address of registration mail."),
    Setting("recaptcha-secret", None, str,
            "Check reCAPTCHA answers on registration with this secret (off without it)."),
    Setting("recaptcha-verify-url", DEFAULT_VERIFY_URL, httpUrl,
            "Where reCAPTCHA answers are verified."),
    Setting("recaptcha-ca", None, str,
            "A PEM file of CA certificates to trust (alone) for the verify URL."),
    Setting("registered-redirect", "/", localOrHttpUrl,
            "Where the mailed registration link sends the user once registered."),
    Setting("bcrypt-rounds", "12", bcryptRounds, "The bcrypt cost for new password hashes."),
    Setting("metrics-listen", None, str,
            "A Twisted endpoint serving Prometheus /metrics, e.g. tcp:9108:interface=127.0.0.1 "
            "(off without it; keep it private)."),
]


class SocktopusOptions(usage.Options):
    """
    The daemon's options. Each one can also come from C{SOCKTOPUS_<OPTION>}
    in the environment or the C{.env} file; the command line wins.
    """

    synopsis = "[--listen ENDPOINT]... [--database URL] [options]"
    optParameters: list[list[str | None]] = [
        [s.name, None, None,
         f"{s.help} [env {s.variable}" + (f", default: {s.default}]" if s.default else "]")]
        for s in SETTINGS
    ]
    longdesc = (
        "Live WebSocket connections and user accounts for serverless backends. "
        "Apps are configured by environment variables <APP>_SOCKTOPUS_SECRET=<secret>."
    )

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._given = environ
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    # usage.Options prints a docstring as written; one line wraps cleanly.
    opt_listen.__doc__ = (
        "A Twisted endpoint to serve on, e.g. tcp:8080 or "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem; may be repeated. "
        "[env SOCKTOPUS_LISTEN, space-separated; default tcp:$PORT, else tcp:8080]"
    )

    def postOptions(self) -> None:
        try:
            environ = loadEnvironment(self._given)
        except EnvironmentError_ as e:
            raise usage.UsageError(str(e)) from None
        self["environ"] = environ

        for setting in SETTINGS:
            raw, source = self[setting.name], f"--{setting.name}"
            if raw is None and setting.variable in environ:
                raw, source = environ[setting.variable], setting.variable
            if raw is None:
                raw = setting.default
            if raw is None:
                self[setting.name] = None
                continue
            try:
                self[setting.name] = setting.parse(raw)
            except (ValueError, ApiError) as e:
                raise usage.UsageError(f"{source} {raw!r}: {e}") from None
        if self["smtp"] is not None and self["mail-from"] is None:
            raise usage.UsageError("--smtp needs --mail-from, the address mail is sent from")
        if self["recaptcha-secret"] is not None:
            try:
                loadTrustRoot(self["recaptcha-ca"])
            except ValueError as e:
                raise usage.UsageError(f"--recaptcha-ca: {e}") from None

        if not self["listen"]:
            if environ.get(ENV_PREFIX + "LISTEN", "").strip():
                self["listen"] = environ[ENV_PREFIX + "LISTEN"].split()
            elif environ.get("PORT", "").strip():
                self["listen"] = [f"tcp:{environ['PORT'].strip()}"]
            else:
                self["listen"] = [f"tcp:{DEFAULT_PORT}"]
        from twisted.internet import reactor

        endpoints = [("--listen", d) for d in self["listen"]]
        if self["metrics-listen"] is not None:
            endpoints.append(("--metrics-listen", self["metrics-listen"]))
        for option, description in endpoints:
            try:
                serverFromString(reactor, description)
            except Exception as e:
                if description.startswith("systemd:"):
                    raise usage.UsageError(
                        f"{option} {description!r}: systemd passed no socket (LISTEN_FDS and "
                        "LISTEN_FDNAMES); start the daemon through socktopus.socket, or use "
                        "--listen tcp:8080"
                    ) from None
                raise usage.UsageError(
                    f"{option} {description!r}: {e or 'not a Twisted endpoint string'}; "
                    "examples: tcp:8080, tcp:8080:interface=127.0.0.1, unix:/run/socktopus.sock"
                ) from None

        try:
            self["database"] = parseDatabaseUrl(self["database"])
            checkDatabase(self["database"])
        except DatabaseError as e:
            raise usage.UsageError(str(e)) from None

        self["apps"] = Apps.fromEnvironment(environ)


def complain(message: str) -> None:
    """
    One line on the real stderr: by the time services start, twistd has
    redirected C{sys.stderr} into the log.
    """
    (sys.__stderr__ or sys.stderr).write(f"socktopus: {message}\n")


class Options(SocktopusOptions):
    """
    What twistd parses: a mistake is one line on stderr and exit status 2,
    not twistd's whole usage text.
    """

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            complain(str(e))
            raise SystemExit(2) from None
        self["exitZeroOnTerm"] = True


class SocktopusService(MultiService):
    """
    The daemon: its children are composed by L{makeService}. A start-up
    failure the user can fix ends the process with one line, not a traceback.
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
        self.log.info("Socktopus {version} starting, serving {count} apps: {apps}",
                      version=socktopus_tw.__version__, count=len(self.apps),
                      apps=", ".join(self.apps.names()) or "none")
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
        for site in {listener.factory for listener in listeners}:
            if isinstance(site, SocktopusSite):
                await site.drain(self.drainTimeout)
        await gatherResults([maybeDeferred(c.stopService) for c in children
                             if c not in listeners])


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


def makeService(config: Mapping[str, Any], reactor: Any = None) -> SocktopusService:
    """
    Compose the daemon from parsed options.
    """
    if reactor is None:
        from twisted.internet import reactor
    apps = config["apps"]
    top = SocktopusService(apps)

    metrics = Metrics()
    registry = Registry(reactor, idleTimeout=config["idle-timeout"],
                        tokenLifespan=config["token-lifespan"], metrics=metrics)
    registry.setServiceParent(top)
    metrics.watchConnections(registry.counts)
    database = Database(openPool(config["database"], reactor), config["database"], metrics)
    DatabaseService(database).setServiceParent(top)

    passwords = Passwords(reactor, rounds=config["bcrypt-rounds"])
    passwords.setServiceParent(top)
    mailer = recaptcha = None
    if config["smtp"] is not None:
        mailer = Mailer(config["smtp"], config["mail-from"], reactor)
    if config["recaptcha-secret"] is not None:
        recaptcha = Recaptcha(config["recaptcha-secret"], config["recaptcha-verify-url"],
                              reactor, config["recaptcha-ca"])
    accounts = Accounts(database, passwords, reactor, publicUrl=config["public-url"],
                        mailer=mailer, recaptcha=recaptcha,
                        registeredRedirect=config["registered-redirect"], metrics=metrics)

    factory = RelayFactory(registry, maxClientBuffer=config["max-client-buffer"],
                           maxMessageSize=config["max-message-size"])
    receive = ReceiveResource(Gatekeeper(apps, registry), factory)
    root = Root()
    root.putChild(b"", HomeResource(apps, registry))
    root.putChild(b"recieve", receive)
    root.putChild(b"receive", receive)
    send = SendResource(apps, registry, reactor, maxMessageSize=config["max-message-size"],
                        metrics=metrics)
    kick = KickResource(apps, registry, reactor)
    root.putChild(b"send", send)
    root.putChild(b"kick", kick)
    root.putChild(b"health", Health())
    root.putChild(b"ready", Ready(database))
    installAccounts(root, accounts)
    site = FastPathSite(root, maxBodySize=config["max-body-size"], metrics=metrics)
    site.serveDirectly(b"/send", send)
    site.serveDirectly(b"/kick", kick)

    if config.get("exitZeroOnTerm"):
        StopOnTerm(reactor).setServiceParent(top)
    for index, description in enumerate(config["listen"]):
        listener = Listener(description, serverFromString(reactor, description), site)
        # Indexed: the same endpoint twice (tcp:0, say) is two listeners.
        listener.setName(f"listen {index} {description}")
        listener.setServiceParent(top)
    if config["metrics-listen"] is not None:
        metricsRoot = Root()
        metricsRoot.putChild(b"metrics", MetricsResource(metrics))
        description = config["metrics-listen"]
        listener = Listener(description, serverFromString(reactor, description),
                            SocktopusSite(metricsRoot))
        listener.setName(f"metrics {description}")
        listener.setServiceParent(top)
    return top

