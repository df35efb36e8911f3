# -*- test-case-name: tests.test_settings,tests.test_tap,tests.deploy.test_first_contact -*-
"""
The daemon's settings: the table of options that take a value, their
parsers, the environment (the process environment over a C{.env} file) they
can also come from, and L{resolveConfiguration}, which turns all of it into
the parsed configuration L{socktopus_tw.tap.makeService} composes from.

The Go original read C{.env} from its working directory too; as there, the
real environment always wins over the file, and the command line over both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString
from twisted.logger import InvalidLogLevelError, LogLevel

from socktopus_tw.accounts.mail import parseSmtpUrl
from socktopus_tw.accounts.recaptcha import DEFAULT_VERIFY_URL, loadTrustRoot
from socktopus_tw.accounts.rules import checkEmail
from socktopus_tw.apps import Apps
from socktopus_tw.cluster.redisurl import parseRedisUrl
from socktopus_tw.db import (
    DEFAULT_DATABASE,
    DatabaseConfig,
    DatabaseError,
    checkDatabase,
    parseDatabaseUrl,
)
from socktopus_tw.db.dialect import SQLITE
from socktopus_tw.errors import ApiError
from socktopus_tw.relay.webhooks import checkWebhookUrl

ENV_PREFIX = "SOCKTOPUS_"
DEFAULT_PORT = 8080
DOTENV = ".env"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


class ConfigurationError(ValueError):
    """
    A setting the daemon cannot run with; the message is one sentence for
    the user, naming the option or variable and what was expected.
    """


class EnvironmentFileError(ConfigurationError):
    """
    The C{.env} file could not be read or parsed; the message says where.
    """


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


def rate(text: str) -> float:
    """
    A positive number of events per second, e.g. C{20} or C{0.5}.
    """
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number per second") from None
    if not 0 < value < 10**9:
        raise ValueError("expected a number per second greater than 0")
    return value


def bcryptRounds(text: str) -> int:
    """
    A bcrypt cost: 4 to 31.
    """
    try:
        rounds = int(text)
    except ValueError:
        rounds = 0
    if not 4 <= rounds <= 31:
        raise ValueError("expected a bcrypt cost from 4 to 31 (each step doubles the time)")
    return rounds


def httpUrl(text: str) -> str:
    """
    An absolute C{http://} or C{https://} URL.
    """
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return text


def localOrHttpUrl(text: str) -> str:
    """
    A path on this host (C{/...}) or an absolute http(s) URL.
    """
    if text.startswith("/"):
        return text
    return httpUrl(text)


def emailAddress(text: str) -> str:
    """
    An e-mail address, checked as registration checks one.
    """
    return checkEmail(text) and text


#: The password of a URL's user information: C{scheme://user:PASSWORD@}.
_URL_PASSWORD = re.compile(r"(?P<head>^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:).*(?=@)", re.DOTALL)


def withoutPassword(text: str) -> str:
    """
    C{text} with a URL's password replaced by C{***}, for error messages:
    a mistyped C{--redis} or C{--smtp} URL must not print its password.
    """
    return _URL_PASSWORD.sub(r"\g<head>***", text)


def onOff(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("on", "off"):
        raise ValueError("expected on or off")
    return value == "on"


def days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of days") from None
    if not 0 < value < 100_000:
        raise ValueError("expected a number of days greater than 0")
    return value


def logLevel(text: str) -> LogLevel:
    try:
        level = LogLevel.levelWithName(text.strip().lower())
    except InvalidLogLevelError:
        raise ValueError("expected debug, info, warn or error") from None
    return level


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
        """
        The environment variable that can set it: C{SOCKTOPUS_IDLE_TIMEOUT}.
        """
        return ENV_PREFIX + self.name.upper().replace("-", "_")


SETTINGS = [
    Setting(
        "database",
        DEFAULT_DATABASE,
        str,
        "sqlite:PATH or mysql://USER:PASSWORD@HOST:PORT/DBNAME[?unix_socket=PATH].",
    ),
    Setting(
        "token-lifespan",
        "5",
        seconds,
        "Seconds a relay token is valid after (and before) its stamp.",
    ),
    Setting(
        "idle-timeout",
        "20",
        seconds,
        "Seconds of silence after which a client connection is closed.",
    ),
    Setting("max-body-size", "16MiB", size, "Largest request body; larger is a 413."),
    Setting(
        "max-message-size",
        "1MiB",
        size,
        "Largest content of one relayed message; larger messages fail.",
    ),
    Setting(
        "max-client-buffer",
        "8MiB",
        size,
        "Unsent data one client may have queued before it is cut off.",
    ),
    Setting(
        "client-message-rate",
        "20",
        rate,
        "Frames a second one client may send (bursts of twice that); more closes it (1008).",
    ),
    Setting(
        "public-url",
        "http://localhost:8080",
        httpUrl,
        "The daemon's public base URL, used in mailed links.",
    ),
    Setting(
        "smtp",
        None,
        parseSmtpUrl,
        "smtp://[USER:PASSWORD@]HOST:PORT[?starttls=1]: mail registration codes "
        "(without it, users are registered at once).",
    ),
    Setting("mail-from", None, emailAddress, "The From address of registration mail."),
    Setting(
        "recaptcha-secret",
        None,
        str,
        "Check reCAPTCHA answers on registration with this secret (off without it).",
    ),
    Setting(
        "recaptcha-verify-url", DEFAULT_VERIFY_URL, httpUrl, "Where reCAPTCHA answers are verified."
    ),
    Setting(
        "recaptcha-ca",
        None,
        str,
        "A PEM file of CA certificates to trust (alone) for the verify URL.",
    ),
    Setting(
        "registered-redirect",
        "/",
        localOrHttpUrl,
        "Where the mailed registration link sends the user once registered.",
    ),
    Setting("bcrypt-rounds", "12", bcryptRounds, "The bcrypt cost for new password hashes."),
    Setting(
        "redis",
        None,
        parseRedisUrl,
        "redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss://... or redis+unix:///PATH: "
        "be one node of a cluster of daemons sharing this Redis (off without it).",
    ),
    Setting(
        "metrics-listen",
        None,
        str,
        "A Twisted endpoint serving Prometheus /metrics, e.g. tcp:9108:interface=127.0.0.1 "
        "(off without it; keep it private).",
    ),
    Setting(
        "login-throttle",
        "on",
        onOff,
        "on or off: refuse a user name and IP, or an IP, that guesses passwords (429).",
    ),
    Setting(
        "audit-retention",
        "90",
        days,
        "Days the audit log keeps an account's events.",
    ),
    Setting(
        "log-level",
        "info",
        logLevel,
        "The least level of log line written: debug (a line per /send batch), info, warn or error.",
    ),
]


def parseDotEnv(text: str, filename: str = DOTENV) -> dict[str, str]:
    """
    Parse C{NAME=VALUE} lines. Blank lines and C{#} comments are skipped, an
    C{export } prefix is allowed, and a value may be wrapped in matching
    single or double quotes (taken literally, no escapes).
    """
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, equals, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise EnvironmentFileError(
                f"{filename} line {number}: expected NAME=VALUE, got {line[:40]!r}"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def loadEnvironment(environ: Mapping[str, str] | None = None, path: str = DOTENV) -> dict[str, str]:
    """
    The process environment laid over the C{.env} file at C{path}, if any.
    """
    if environ is None:
        environ = os.environ
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise EnvironmentFileError(f"cannot read {path}: {e}") from None
    merged = parseDotEnv(text, path)
    merged.update(environ)
    return merged


def defaultListen(environ: Mapping[str, str]) -> list[str]:
    """
    The endpoints to serve on when no C{--listen} is given:
    C{SOCKTOPUS_LISTEN} (space-separated), else C{tcp:$PORT} (as platforms
    that pick the port set it), else C{tcp:8080}.
    """
    if environ.get(ENV_PREFIX + "LISTEN", "").strip():
        return environ[ENV_PREFIX + "LISTEN"].split()
    if environ.get("PORT", "").strip():
        return [f"tcp:{environ['PORT'].strip()}"]
    return [f"tcp:{DEFAULT_PORT}"]


#: C{tcp:127.0.0.1:8093}, the way other programs write an address, where a
#: Twisted endpoint has the port first and the address as C{interface=}.
_HOST_FIRST = re.compile(
    r"(?P<kind>tcp6?|ssl):(?P<host>\[[^\]]*\]|[^:=\[\]]*[^:=\[\]\d][^:=\[\]]*)"
    r":(?P<port>\d+)(?P<rest>:.*)?",
    re.DOTALL,
)


def _hostFirstHint(description: str) -> str | None:
    """
    The endpoint string meant by C{tcp:HOST:PORT...}, if that is what
    C{description} is.
    """
    match = _HOST_FIRST.fullmatch(description)
    if match is None:
        return None
    kind, host, port = match["kind"], match["host"], match["port"]
    if host.startswith("["):
        # An IPv6 address: tcp6, and its colons escaped for the endpoint parser.
        kind = "tcp6" if kind == "tcp" else kind
        host = host[1:-1].replace(":", "\\:")
    return f"{kind}:{port}:interface={host}{match['rest'] or ''}"


def checkEndpoint(option: str, description: str, reactor: Any = None) -> None:
    """
    Raise L{ConfigurationError} unless C{description} is a server endpoint
    string that can be built here, with a port in range; C{option} names
    where it came from.
    """
    if reactor is None:
        # Imported late: importing the reactor installs the default one, and
        # twistd may still be about to install the one --reactor asked for.
        from twisted.internet import reactor
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as e:
        # Outside systemd socket activation, the systemd: parser fails on a
        # missing environment variable; say what to do, not which variable.
        if description.startswith("systemd:"):
            raise ConfigurationError(
                f"{option} {description!r}: systemd passed no socket (LISTEN_FDS and "
                "LISTEN_FDNAMES); start the daemon through socktopus.socket, or use "
                "--listen tcp:8080"
            ) from None
        meant = _hostFirstHint(description)
        if meant is not None:
            raise ConfigurationError(
                f"{option} {description!r}: a Twisted endpoint puts the port first "
                f"and the address in interface=; use {meant}"
            ) from None
        reason = str(e) or "not a Twisted endpoint string"
        if isinstance(e, ValueError) and reason.startswith("invalid literal for int()"):
            reason = "the port must be a number from 0 to 65535"
        raise ConfigurationError(
            f"{option} {description!r}: {reason}; "
            "examples: tcp:8080, tcp:8080:interface=127.0.0.1, unix:/run/socktopus.sock"
        ) from None
    # The TCP and TLS endpoints keep their port as _port (every Twisted
    # since 10.1); checked here, 99999 is one line before anything is done,
    # not an OverflowError after the database was created and migrated.
    port = getattr(endpoint, "_port", None)
    if type(port) is int and not 0 <= port <= 65535:
        raise ConfigurationError(
            f"{option} {description!r}: port {port} is out of range; a port is 0 to 65535 "
            "(0 picks a free one)"
        )


def _newSqliteFile(database: DatabaseConfig) -> str | None:
    """
    The absolute path of the SQLite file C{database} names, if it does not
    exist yet (the start-up check will create it).
    """
    if database.module != SQLITE.module:
        return None
    path = os.path.abspath(database.arguments["database"])
    return None if os.path.exists(path) else path


def resolveConfiguration(
    given: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    created: list[str] | None = None,
) -> dict[str, Any]:
    """
    The daemon's whole configuration, parsed and checked.

    @param given: the command line's values: each setting's text, or C{None}
        where it was not given, and C{"listen"}, a list of endpoint strings.
    @param environ: the process environment (default: C{os.environ}); it is
        laid over the C{.env} file in the working directory.
    @param created: if given, the absolute paths of files the checks created
        (a new SQLite file) are appended, for a failed start to remove.
    @return: every setting parsed, C{"listen"}, C{"database"} as a
        L{socktopus_tw.db.DatabaseConfig}, the merged C{"environ"}, and the
        C{"apps"} it configures.
    @raise ConfigurationError: for the first thing wrong, in option order;
        everything that needs no disk or network is checked before the
        database is.
    """
    environ = loadEnvironment(environ)
    # "environ" first: callers update their options with this dict in order.
    config: dict[str, Any] = {"environ": environ}

    for setting in SETTINGS:
        # The command line wins over the environment, which wins over the default.
        raw, source = given.get(setting.name), f"--{setting.name}"
        if raw is None and setting.variable in environ:
            raw, source = environ[setting.variable], setting.variable
        if raw is None:
            raw = setting.default
        if raw is None:
            config[setting.name] = None
            continue
        try:
            config[setting.name] = setting.parse(raw)
        except (ValueError, ApiError) as e:
            raise ConfigurationError(f"{source} {withoutPassword(raw)!r}: {e}") from None
    if config["smtp"] is not None and config["mail-from"] is None:
        raise ConfigurationError("--smtp needs --mail-from, the address mail is sent from")
    if config["recaptcha-secret"] is not None:
        try:
            loadTrustRoot(config["recaptcha-ca"])
        except ValueError as e:
            raise ConfigurationError(f"--recaptcha-ca: {e}") from None

    config["listen"] = list(given.get("listen") or defaultListen(environ))
    endpoints = [("--listen", d) for d in config["listen"]]
    if config["metrics-listen"] is not None:
        endpoints.append(("--metrics-listen", config["metrics-listen"]))
    for option, description in endpoints:
        checkEndpoint(option, description)

    try:
        config["database"] = parseDatabaseUrl(config["database"])
        newFile = _newSqliteFile(config["database"])
        checkDatabase(config["database"])
    except DatabaseError as e:
        raise ConfigurationError(str(e)) from None
    if newFile is not None and created is not None and os.path.exists(newFile):
        created.append(newFile)

    try:
        config["apps"] = apps = Apps.fromEnvironment(environ)
    except ValueError as e:
        raise ConfigurationError(str(e)) from None
    for app, url in apps.webhooks().items():
        problem = checkWebhookUrl(url)
        if problem is not None:
            raise ConfigurationError(
                f"{app.upper()}_SOCKTOPUS_WEBHOOK {withoutPassword(url)!r}: {problem}"
            )
    return config
