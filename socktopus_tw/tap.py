# -*- test-case-name: tests.test_tap,tests.deploy.test_first_contact -*-
"""
C{twistd socktopus}: the command-line options and the composition of the
daemon's services. No logic of its own lives here: settings are parsed and
checked in L{socktopus_tw.settings}, the process' lifecycle is
L{socktopus_tw.daemon}.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

import socktopus_tw
from socktopus_tw.accounts.api import routes as accountsRoutes
from socktopus_tw.accounts.housekeeping import Housekeeping
from socktopus_tw.accounts.mail import Mailer
from socktopus_tw.accounts.passwords import Passwords
from socktopus_tw.accounts.recaptcha import Recaptcha
from socktopus_tw.accounts.service import Accounts
from socktopus_tw.cluster.registry import ClusterRegistry
from socktopus_tw.daemon import Listener, SocktopusService, Startup, StopOnTerm, complain
from socktopus_tw.db import Database, DatabaseService, openPool
from socktopus_tw.health import Health, Ready
from socktopus_tw.http.fastpath import FastPathSite
from socktopus_tw.http.respond import Root
from socktopus_tw.http.site import SocktopusSite
from socktopus_tw.logs import defaultObserver, setLevel
from socktopus_tw.metrics import Metrics, MetricsResource
from socktopus_tw.relay.registry import IRegistry, LocalRegistry
from socktopus_tw.relay.routes import routes as relayRoutes
from socktopus_tw.relay.totals import SendTotals
from socktopus_tw.relay.webhooks import Webhooks
from socktopus_tw.settings import SETTINGS, ConfigurationError, resolveConfiguration


class SocktopusOptions(usage.Options):
    """
    The daemon's options. Each one can also come from C{SOCKTOPUS_<OPTION>}
    in the environment or the C{.env} file; the command line wins.
    """

    synopsis = "[--listen ENDPOINT]... [--database URL] [options]"
    optParameters: list[list[str | None]] = [
        [
            s.name,
            None,
            None,
            f"{s.help} [env {s.variable}" + (f", default: {s.default}]" if s.default else "]"),
        ]
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
        #: Files the checks created (a new SQLite file), for a failed start to remove.
        self.created: list[str] = []

    def opt_version(self) -> None:
        """
        Print Socktopus' version and exit.
        """
        print(f"socktopus {socktopus_tw.__version__}")
        sys.exit(0)

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    # usage.Options prints a docstring as written; one line wraps cleanly.
    opt_listen.__doc__ = (
        "A Twisted endpoint to serve on, e.g. tcp:8080, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem or reuseport:8080 (a port shared "
        "by several daemons); may be repeated. "
        "[env SOCKTOPUS_LISTEN, space-separated; default tcp:$PORT, else tcp:8080]"
    )

    def postOptions(self) -> None:
        try:
            self.update(resolveConfiguration(self, self._given, self.created))
        except ConfigurationError as e:
            raise usage.UsageError(str(e)) from None


class Options(SocktopusOptions):
    """
    What twistd parses: a mistake is one line on stderr and exit status 2,
    not twistd's whole usage text. Parsed before twistd daemonises, so this
    is where the L{Startup} that reports a later failure is made.
    """

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            complain(str(e))
            raise SystemExit(2) from None
        self["exitZeroOnTerm"] = True
        # twistd's own options are the parent; without -n (or --debug) it
        # forks and points fd 2 at /dev/null before the services start.
        twistd = getattr(self, "parent", None)
        if twistd is not None and not (twistd.get("nodaemon") or twistd.get("debug")):
            self["startup"] = Startup.beforeDaemonising(self.created)
        else:
            self["startup"] = Startup(created=self.created)


#: The queue of connections not yet accepted a listening socket asks for
#: (the kernel caps it at net.core.somaxconn): after a restart every client
#: reconnects at once, and Twisted's 50 would drop most of their SYNs for a
#: second or more, past the 5 s their tokens live.
LISTEN_BACKLOG = 4096


#: Where each kind of listening endpoint takes its backlog as a positional
#: argument (counting the port or path as the first), as Twisted parses them.
_BACKLOG_POSITION = {"tcp": 3, "tcp6": 2, "ssl": 6, "unix": 3, "reuseport": 2}


def withBacklog(description: str) -> str:
    """
    A listening endpoint's description with L{LISTEN_BACKLOG} as its
    backlog, unless it gives one (by name or position) or its kind takes
    none.
    """
    kind, positional, named = _endpointArguments(description)
    position = _BACKLOG_POSITION.get(kind.lower())
    if position is None or "backlog" in named or len(positional) >= position:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


def _endpointArguments(description: str) -> tuple[str, list[str], set[str]]:
    """
    An endpoint description's kind, positional arguments and argument
    names, split at the colons that are not escaped with a backslash.
    """
    fields, field, escaped = [], "", False
    for character in description:
        if escaped:
            field, escaped = field + character, False
        elif character == "\\":
            escaped = True
        elif character == ":":
            fields.append(field)
            field = ""
        else:
            field += character
    fields.append(field)
    kind, arguments = fields[0], fields[1:]
    named = {argument.split("=", 1)[0] for argument in arguments if "=" in argument}
    return kind, [argument for argument in arguments if "=" not in argument], named


def makeService(config: Mapping[str, Any], reactor: Any = None) -> SocktopusService:
    """
    Compose the daemon from parsed options.
    """
    if reactor is None:
        from twisted.internet import reactor
    apps = config["apps"]
    top = SocktopusService(apps, config.get("startup"))
    setLevel(config["log-level"])
    top.logObserver = defaultObserver(getattr(config, "parent", None))

    metrics = Metrics()
    webhooks = None
    if apps.webhooks():
        # Stopped after the registry (see SocktopusService.stopService), so
        # the shutdown's disconnect events are posted.
        webhooks = Webhooks(apps.webhooks(), apps.secretFor, reactor, metrics=metrics)
        webhooks.setServiceParent(top)
    local = LocalRegistry(
        reactor,
        idleTimeout=config["idle-timeout"],
        tokenLifespan=config["token-lifespan"],
        metrics=metrics,
        events=webhooks,
    )
    registry: IRegistry = local
    checks: list[Callable[[], None]] = []
    if config.get("redis") is not None:
        registry = ClusterRegistry(local, config["redis"], reactor)
        checks.append(registry.ready)
    registry.setServiceParent(top)
    # /metrics stays per node (SPEC §6).
    metrics.watchConnections(local.counts)
    database = Database(openPool(config["database"], reactor), config["database"], metrics)
    DatabaseService(database).setServiceParent(top)

    passwords = Passwords(reactor, rounds=config["bcrypt-rounds"])
    passwords.setServiceParent(top)
    mailer = recaptcha = None
    if config["smtp"] is not None:
        mailer = Mailer(config["smtp"], config["mail-from"], reactor)
    if config["recaptcha-secret"] is not None:
        recaptcha = Recaptcha(
            config["recaptcha-secret"],
            config["recaptcha-verify-url"],
            reactor,
            config["recaptcha-ca"],
        )
    accounts = Accounts(
        database,
        passwords,
        reactor,
        publicUrl=config["public-url"],
        mailer=mailer,
        recaptcha=recaptcha,
        registeredRedirect=config["registered-redirect"],
        metrics=metrics,
        throttle=config["login-throttle"],
        apps=apps,
        auditRetention=config["audit-retention"] * 86400,
    )
    Housekeeping(accounts, reactor).setServiceParent(top)

    totals = SendTotals(reactor)
    totals.setServiceParent(top)
    site = FastPathSite(Root(), maxBodySize=config["max-body-size"], metrics=metrics)
    relay = relayRoutes(
        apps,
        registry,
        reactor,
        tokenLifespan=config["token-lifespan"],
        maxClientBuffer=config["max-client-buffer"],
        maxMessageSize=config["max-message-size"],
        clientMessageRate=config["client-message-rate"],
        metrics=metrics,
        totals=totals,
        # For the home page's overview of endpoints: composed just below.
        accountsMounted=True,
        healthMounted=True,
        metricsListener=config["metrics-listen"] is not None,
    )
    health = [(b"health", Health()), (b"ready", Ready(database, checks=checks))]
    for name, resource in [*relay, *accountsRoutes(accounts), *health]:
        site.route(name, resource)

    if config.get("exitZeroOnTerm"):
        StopOnTerm(reactor).setServiceParent(top)
    for index, description in enumerate(config["listen"]):
        listener = Listener(description, serverFromString(reactor, withBacklog(description)), site)
        # Indexed: the same endpoint twice (tcp:0, say) is two listeners.
        listener.setName(f"listen {index} {description}")
        listener.setServiceParent(top)
    if config["metrics-listen"] is not None:
        metricsRoot = Root()
        metricsRoot.putChild(b"metrics", MetricsResource(metrics))
        description = config["metrics-listen"]
        listener = Listener(
            description, serverFromString(reactor, description), SocktopusSite(metricsRoot)
        )
        listener.setName(f"metrics {description}")
        listener.setServiceParent(top)
    return top
