"""
Tests for L{socktopus_tw.tap}: the daemon's options as a whole, every user
mistake as a clear L{usage.UsageError}, and L{makeService}'s composition.
The C{.env} parser and C{--database} URLs the options build on have their
own tests, L{tests.test_settings} and L{tests.db.test_config}.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw import tap
from socktopus_tw.daemon import Listener
from socktopus_tw.db import DatabaseConfig, DatabaseService
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.tap import SocktopusOptions, makeService, withBacklog

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULTS: dict[str, Any] = {
    "listen": ["tcp:8080"],
    "database": DatabaseConfig(
        "sqlite3", {"database": "socktopus.sqlite3"}, "SQLite file socktopus.sqlite3"
    ),
    "token-lifespan": 5.0,
    "idle-timeout": 20.0,
    "max-body-size": 16 * MiB,
    "max-message-size": 1 * MiB,
    "max-client-buffer": 8 * MiB,
    "client-message-rate": 20.0,
}

# The accounts options: mail and reCAPTCHA off, as a fresh install has them.
ACCOUNTS_DEFAULTS: dict[str, Any] = {
    "public-url": "http://localhost:8080",
    "smtp": None,
    "mail-from": None,
    "recaptcha-secret": None,
    "recaptcha-verify-url": "https://www.google.com/recaptcha/api/siteverify",
    "recaptcha-ca": None,
    "registered-redirect": "/",
    "bcrypt-rounds": 12,
    "redis": None,
    "metrics-listen": None,
    "login-throttle": True,
    "audit-retention": 90.0,
    "log-level": LogLevel.info,
}
DEFAULTS.update(ACCOUNTS_DEFAULTS)


def captureStderr(testCase: SynchronousTestCase) -> io.StringIO:
    """
    Collect what the daemon writes to stderr, either the current one or the
    process's original (twistd redirects C{sys.stderr} into its log).
    """
    stderr = io.StringIO()
    testCase.patch(sys, "stderr", stderr)
    testCase.patch(sys, "__stderr__", stderr)
    return stderr


class InTemporaryDirectory:
    """
    Mixin: each test runs in a fresh, empty working directory, so a C{.env}
    or the default SQLite file of one test never leaks into another.
    """

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.directory = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(self.directory)
        self.addCleanup(os.chdir, os.getcwd())  # type: ignore[attr-defined]
        os.chdir(self.directory)

    def writeDotEnv(self, text: str | bytes) -> None:
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(os.path.join(self.directory, ".env"), mode) as f:
            f.write(text)


class OptionsTestCase(InTemporaryDirectory, SynchronousTestCase):
    """
    Helpers to parse options and compare them as a whole.
    """

    def parse(
        self, arguments: list[str], environ: dict[str, str] | None = None
    ) -> SocktopusOptions:
        options = SocktopusOptions(environ={} if environ is None else environ)
        options.parseOptions(arguments)
        return options

    def parsed(self, arguments: list[str], environ: dict[str, str] | None = None) -> dict[str, Any]:
        """
        The parsed options as a plain dict, without the derived C{environ}
        and C{apps} (checked by their own tests).
        """
        result = dict(self.parse(arguments, environ))
        self.assertIn("environ", result)
        self.assertIn("apps", result)
        del result["environ"], result["apps"]
        return result

    def expected(self, **changes: Any) -> dict[str, Any]:
        result = dict(DEFAULTS)
        result.update({name.replace("_", "-"): value for name, value in changes.items()})
        return result

    def assertUsageError(
        self, arguments: list[str], *fragments: str, environ: dict[str, str] | None = None
    ) -> str:
        """
        Parsing fails with a one-line L{usage.UsageError} containing each of
        C{fragments}; return the message.
        """
        options = SocktopusOptions(environ={} if environ is None else environ)
        error = self.assertRaises(usage.UsageError, options.parseOptions, arguments)
        message = str(error)
        self.assertNotIn("\n", message.strip())
        self.assertNotIn("Traceback", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def sqlitePath(self, name: str = "data.sqlite3") -> str:
        return os.path.join(self.directory, name)


class DefaultsTests(OptionsTestCase):
    """
    What the daemon does with no options at all.
    """

    def test_defaults(self) -> None:
        """
        With no options the daemon listens on tcp:8080, with the SQLite file and the spec's values.
        """
        self.assertEqual(self.parsed([]), DEFAULTS)

    def test_defaultDatabaseIsInWorkingDirectory(self) -> None:
        """
        The default SQLite file is created in the working directory.
        """
        self.parse([])
        self.assertTrue(os.path.exists(os.path.join(self.directory, "socktopus.sqlite3")))

    def test_portEnvironment(self) -> None:
        """
        On a platform that sets PORT (as the original honoured) the daemon listens on tcp:$PORT.
        """
        self.assertEqual(self.parsed([], {"PORT": "9123"}), self.expected(listen=["tcp:9123"]))
        self.assertEqual(self.parsed([], {"PORT": " 9124\n"}), self.expected(listen=["tcp:9124"]))

    def test_emptyPortIgnored(self) -> None:
        """
        An empty PORT variable is ignored: the daemon uses 8080.
        """
        self.assertEqual(self.parsed([], {"PORT": ""}), DEFAULTS)

    def test_listenEnvironment(self) -> None:
        """
        SOCKTOPUS_LISTEN with several endpoints is split on any whitespace.
        """
        environ = {"SOCKTOPUS_LISTEN": "tcp:9001:interface=127.0.0.1  unix:sock\ttcp:9002 "}
        self.assertEqual(
            self.parsed([], environ),
            self.expected(listen=["tcp:9001:interface=127.0.0.1", "unix:sock", "tcp:9002"]),
        )

    def test_listenEnvironmentBeatsPort(self) -> None:
        """
        The explicit SOCKTOPUS_LISTEN wins over the generic PORT variable.
        """
        environ = {"SOCKTOPUS_LISTEN": "tcp:9001", "PORT": "9002"}
        self.assertEqual(self.parsed([], environ)["listen"], ["tcp:9001"])

    def test_commandLineListenWins(self) -> None:
        """
        --listen on the command line replaces the environment's endpoints.
        """
        environ = {"SOCKTOPUS_LISTEN": "tcp:9001", "PORT": "9002"}
        self.assertEqual(self.parsed(["--listen", "tcp:9003"], environ)["listen"], ["tcp:9003"])

    def test_repeatedListen(self) -> None:
        """
        Every one of several --listen options is used, in order.
        """
        arguments = [
            "--listen",
            "tcp:9001",
            "--listen",
            "tcp:9002:interface=\\:\\:1",
            "--listen",
            "unix:socktopus.sock",
        ]
        self.assertEqual(
            self.parsed(arguments),
            self.expected(listen=["tcp:9001", "tcp:9002:interface=\\:\\:1", "unix:socktopus.sock"]),
        )

    def test_freshListenListPerInstance(self) -> None:
        """
        Each option parser has its own --listen list.
        """
        self.parse(["--listen", "tcp:9001"])
        self.assertEqual(self.parsed([])["listen"], ["tcp:8080"])


class ValuesTests(OptionsTestCase):
    """
    Every option, from the command line and from the environment.
    """

    def test_everythingOnCommandLine(self) -> None:
        """
        Every option given on the command line is parsed into the value the daemon uses.
        """
        path = self.sqlitePath()
        arguments = [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--database",
            "sqlite:" + path,
            "--token-lifespan",
            "7.5",
            "--idle-timeout",
            "30",
            "--max-body-size",
            "64KiB",
            "--max-message-size",
            "2MiB",
            "--max-client-buffer",
            "1048576",
            "--client-message-rate",
            "5",
        ]
        self.assertEqual(
            self.parsed(arguments),
            {
                "listen": ["tcp:0:interface=127.0.0.1"],
                "database": DatabaseConfig("sqlite3", {"database": path}, f"SQLite file {path}"),
                "token-lifespan": 7.5,
                "idle-timeout": 30.0,
                "max-body-size": 64 * KiB,
                "max-message-size": 2 * MiB,
                "max-client-buffer": 1 * MiB,
                "client-message-rate": 5.0,
                **ACCOUNTS_DEFAULTS,
            },
        )

    def test_everythingFromEnvironment(self) -> None:
        """
        Every option can come from its SOCKTOPUS_<OPTION> variable.
        """
        path = self.sqlitePath()
        environ = {
            "SOCKTOPUS_LISTEN": "tcp:9001",
            "SOCKTOPUS_DATABASE": "sqlite:" + path,
            "SOCKTOPUS_TOKEN_LIFESPAN": "9",
            "SOCKTOPUS_IDLE_TIMEOUT": "45.5",
            "SOCKTOPUS_MAX_BODY_SIZE": "1MiB",
            "SOCKTOPUS_MAX_MESSAGE_SIZE": "512k",
            "SOCKTOPUS_MAX_CLIENT_BUFFER": "1GiB",
            "SOCKTOPUS_CLIENT_MESSAGE_RATE": "50",
        }
        self.assertEqual(
            self.parsed([], environ),
            {
                "listen": ["tcp:9001"],
                "database": DatabaseConfig("sqlite3", {"database": path}, f"SQLite file {path}"),
                "token-lifespan": 9.0,
                "idle-timeout": 45.5,
                "max-body-size": 1 * MiB,
                "max-message-size": 512 * KiB,
                "max-client-buffer": 1 * GiB,
                "client-message-rate": 50.0,
                **ACCOUNTS_DEFAULTS,
            },
        )

    def test_commandLineBeatsEnvironment(self) -> None:
        """
        The command line wins over the environment (whose bad value is then never read).
        """
        environ = {
            "SOCKTOPUS_TOKEN_LIFESPAN": "9",
            "SOCKTOPUS_IDLE_TIMEOUT": "abc",
            "SOCKTOPUS_MAX_BODY_SIZE": "1MiB",
        }
        result = self.parsed(
            ["--token-lifespan", "3", "--idle-timeout", "4", "--max-body-size", "2MiB"], environ
        )
        self.assertEqual(
            result, self.expected(token_lifespan=3.0, idle_timeout=4.0, max_body_size=2 * MiB)
        )

    def test_sizeUnits(self) -> None:
        """
        Sizes written with a unit, as the help suggests, are read in bytes.
        """
        for text, value in [
            ("1", 1),
            ("1048576", MiB),
            ("100B", 100),
            ("100b", 100),
            ("64k", 64 * KiB),
            ("64K", 64 * KiB),
            ("64kb", 64 * KiB),
            ("64KB", 64 * KiB),
            ("64KiB", 64 * KiB),
            ("64kib", 64 * KiB),
            ("16M", 16 * MiB),
            ("16MB", 16 * MiB),
            ("16MiB", 16 * MiB),
            ("16mib", 16 * MiB),
            ("1G", GiB),
            ("1GB", GiB),
            ("2GiB", 2 * GiB),
            ("1.5MiB", 3 * MiB // 2),
            (" 16 MiB ", 16 * MiB),
        ]:
            result = self.parsed(["--max-message-size", text])
            self.assertEqual(result["max-message-size"], value, text)

    def test_secondsFractions(self) -> None:
        """
        A sub-second lifespan and a timeout in exponent notation are kept as given.
        """
        result = self.parsed(["--token-lifespan", "0.25", "--idle-timeout", "1e1"])
        self.assertEqual((result["token-lifespan"], result["idle-timeout"]), (0.25, 10.0))

    def test_apps(self) -> None:
        """
        Apps configured in the environment are found, their names case-insensitive.
        """
        options = self.parse(
            [], {"DEMO_SOCKTOPUS_SECRET": "s1", "Other_SOCKTOPUS_SECRET": "s2", "PATH": "/bin"}
        )
        self.assertEqual(options["apps"].names(), ["demo", "other"])
        self.assertEqual(options["apps"].secretFor("DEMO"), "s1")

    def test_environGiven(self) -> None:
        """
        The environment given to the options is the one the daemon reads.
        """
        options = self.parse([], {"DEMO_SOCKTOPUS_SECRET": "s1"})
        self.assertEqual(options["environ"], {"DEMO_SOCKTOPUS_SECRET": "s1"})


class DotEnvOptionsTests(OptionsTestCase):
    """
    A C{.env} file in the working directory, under the real environment.
    """

    def test_dotEnvRead(self) -> None:
        """
        Settings, PORT and apps in .env are read.
        """
        self.writeDotEnv(
            "# socktopus settings\n"
            "SOCKTOPUS_TOKEN_LIFESPAN=8\n"
            "\n"
            "export DEMO_SOCKTOPUS_SECRET='from file'\n"
            "PORT=9005\n"
        )
        options = self.parse([])
        self.assertEqual(options["token-lifespan"], 8.0)
        self.assertEqual(options["listen"], ["tcp:9005"])
        self.assertEqual(options["apps"].secretFor("demo"), "from file")

    def test_environmentBeatsDotEnv(self) -> None:
        """
        The real environment wins over .env, which still adds what the environment lacks.
        """
        self.writeDotEnv(
            "SOCKTOPUS_TOKEN_LIFESPAN=8\nDEMO_SOCKTOPUS_SECRET=from-file\n"
            "OTHER_SOCKTOPUS_SECRET=only-in-file\n"
        )
        options = self.parse(
            [], {"SOCKTOPUS_TOKEN_LIFESPAN": "3", "DEMO_SOCKTOPUS_SECRET": "from-environ"}
        )
        self.assertEqual(options["token-lifespan"], 3.0)
        self.assertEqual(options["apps"].secretFor("demo"), "from-environ")
        self.assertEqual(options["apps"].secretFor("other"), "only-in-file")

    def test_commandLineBeatsDotEnv(self) -> None:
        """
        The command line wins over .env.
        """
        self.writeDotEnv("SOCKTOPUS_TOKEN_LIFESPAN=8\nSOCKTOPUS_LISTEN=tcp:9001\n")
        result = self.parsed(["--token-lifespan", "2", "--listen", "tcp:9002"])
        self.assertEqual(result, self.expected(token_lifespan=2.0, listen=["tcp:9002"]))

    def test_noDotEnv(self) -> None:
        """
        Without a .env file the daemon starts with its defaults.
        """
        self.assertFalse(os.path.exists(".env"))
        self.assertEqual(self.parsed([]), DEFAULTS)

    def test_malformedLine(self) -> None:
        """
        A typo in .env is one line naming the file, the line number and the text.
        """
        self.writeDotEnv("# comment\nSOCKTOPUS_TOKEN_LIFESPAN=8\nTHIS IS NOT A SETTING\n")
        self.assertUsageError([], ".env", "line 3", "THIS IS NOT A SETTING")

    def test_badValueInDotEnv(self) -> None:
        """
        A bad value from .env names the variable it came from.
        """
        self.writeDotEnv("SOCKTOPUS_IDLE_TIMEOUT=soon\n")
        self.assertUsageError([], "SOCKTOPUS_IDLE_TIMEOUT", "soon")

    def test_dotEnvNotUtf8(self) -> None:
        """
        A .env saved in a legacy encoding is one line naming the file, not a traceback.
        """
        self.writeDotEnv(b"DEMO_SOCKTOPUS_SECRET=caf\xe9\n")
        self.assertUsageError([], ".env")

    def test_dotEnvUnreadable(self) -> None:
        """
        A .env that cannot be read (here: a directory) is one line naming it, not a traceback.
        """
        os.mkdir(".env")
        self.assertUsageError([], ".env")


class MistakeTests(OptionsTestCase):
    """
    Every user mistake is one clear line, never a traceback.
    """

    def test_badEndpoint(self) -> None:
        """
        A mistyped --listen is one line naming the option and the endpoint.
        """
        for endpoint in [
            "bogus:1",
            "tcp:notaport",
            "tcp:8080:nonsense=1",
            "",
            "ssl:8443:privateKey=/nonexistent/key.pem",
        ]:
            self.assertUsageError(["--listen", endpoint], "--listen", repr(endpoint))

    def test_badEndpointFromEnvironment(self) -> None:
        """
        A bad SOCKTOPUS_LISTEN or PORT is one line naming the endpoint.
        """
        self.assertUsageError([], "bogus:1", environ={"SOCKTOPUS_LISTEN": "tcp:8080 bogus:1"})
        self.assertUsageError([], "tcp:eighty", environ={"PORT": "eighty"})

    def test_unknownOption(self) -> None:
        """
        A misspelt option is refused, named.
        """
        self.assertUsageError(["--tokenlifespan", "5"], "--tokenlifespan")

    def test_extraArgument(self) -> None:
        """
        A stray argument (e.g. a forgotten --listen) is refused.
        """
        self.assertUsageError(["tcp:8080"])

    def test_missingValue(self) -> None:
        """
        An option given without its value is one line naming it.
        """
        self.assertUsageError(["--idle-timeout"], "idle-timeout")

    def test_badSeconds(self) -> None:
        """
        A negative, zero, non-numeric or infinite time is refused, naming the option and the value.
        """
        for option in ["--token-lifespan", "--idle-timeout"]:
            for value in ["-1", "0", "abc", "5s", "", "nan", "inf", "-inf", "1e400"]:
                self.assertUsageError([option, value], option, repr(value))

    def test_logLevels(self) -> None:
        """
        --log-level takes a level's name in any case; anything else is
        refused, naming the levels.
        """
        for value, level in [("debug", LogLevel.debug), ("WARN", LogLevel.warn)]:
            self.assertEqual(self.parsed(["--log-level", value])["log-level"], level)
        for value in ["verbose", "", "0"]:
            self.assertUsageError(["--log-level", value], "--log-level", "debug, info, warn")

    def test_badSecondsFromEnvironment(self) -> None:
        """
        A bad SOCKTOPUS_IDLE_TIMEOUT is reported naming the variable.
        """
        self.assertUsageError(
            [], "SOCKTOPUS_IDLE_TIMEOUT", "-3", environ={"SOCKTOPUS_IDLE_TIMEOUT": "-3"}
        )

    def test_badSize(self) -> None:
        """
        A malformed, zero or negative size is refused, naming the option and the value.
        """
        for option in ["--max-body-size", "--max-message-size", "--max-client-buffer"]:
            for value in [
                "lots",
                "0",
                "-1",
                "-1MiB",
                "64XB",
                "KiB",
                "",
                "1iB",
                "0.1",
                "nan",
                "16 M iB",
            ]:
                self.assertUsageError([option, value], option, repr(value))

    def test_infiniteSize(self) -> None:
        """
        --max-body-size inf (or 1e400) is a usage error, not an OverflowError traceback.
        """
        for value in ["inf", "1e400", "infKiB"]:
            self.assertUsageError(["--max-body-size", value], "--max-body-size", repr(value))

    def test_badSizeFromEnvironment(self) -> None:
        """
        A bad SOCKTOPUS_MAX_BODY_SIZE is reported naming the variable.
        """
        self.assertUsageError(
            [], "SOCKTOPUS_MAX_BODY_SIZE", environ={"SOCKTOPUS_MAX_BODY_SIZE": "big"}
        )

    def test_unknownDatabaseScheme(self) -> None:
        """
        --database postgres://... or a bare path is refused with the two forms accepted.
        """
        for url in [
            "postgres://u:p@localhost/db",
            "socktopus.sqlite3",
            "sqlite3:x.db",
            "",
            "SQLITE:x.db",
        ]:
            self.assertUsageError(["--database", url], "sqlite:", "mysql://")

    def test_emptySqlitePath(self) -> None:
        """
        --database sqlite: with no file is refused, not a traceback or an in-memory database.
        """
        self.assertUsageError(["--database", "sqlite:"], "sqlite:")

    def test_sqliteDirectoryMissing(self) -> None:
        """
        A SQLite file in a missing directory is refused at once, named; no directory is made.
        """
        path = os.path.join(self.directory, "no", "such", "dir", "data.sqlite3")
        self.assertUsageError(["--database", "sqlite:" + path], path)
        self.assertFalse(os.path.exists(os.path.join(self.directory, "no")))

    def test_sqliteReadOnlyDirectory(self) -> None:
        """
        A SQLite file the daemon cannot create or write is refused at once, naming the path.
        """
        readOnly = os.path.join(self.directory, "readonly")
        os.mkdir(readOnly)
        os.chmod(readOnly, stat.S_IRUSR | stat.S_IXUSR)
        self.addCleanup(os.chmod, readOnly, stat.S_IRWXU)
        probe = os.path.join(readOnly, "probe")
        try:
            with open(probe, "w"):
                pass
        except PermissionError:
            pass
        else:
            # Root writes through file modes; /proc takes no files from anyone.
            os.remove(probe)
            readOnly = "/proc"
        path = os.path.join(readOnly, "data.sqlite3")
        self.assertUsageError(["--database", "sqlite:" + path], path)

    def test_sqliteFileNotADatabase(self) -> None:
        """
        Pointing --database at some other file is refused at once, naming it.
        """
        path = self.sqlitePath("notes.txt")
        with open(path, "w") as f:
            f.write("this is not a database, it is a shopping list\n" * 100)
        self.assertUsageError(["--database", "sqlite:" + path], path)

    def test_mysqlWithoutDatabaseName(self) -> None:
        """
        A MySQL URL that names no database is refused, saying so.
        """
        for url in [
            "mysql://user:pw@localhost:3306/",
            "mysql://user:pw@localhost",
            "mariadb://user:pw@db.example/",
        ]:
            self.assertUsageError(["--database", url], "database")

    def test_mysqlBadPort(self) -> None:
        """
        A MySQL URL with a non-numeric port is refused, naming the port.
        """
        self.assertUsageError(["--database", "mysql://user:pw@localhost:port/db"], "port")

    def test_databaseFromEnvironment(self) -> None:
        """
        A bad SOCKTOPUS_DATABASE is one line with the forms accepted.
        """
        self.assertUsageError([], "sqlite:", environ={"SOCKTOPUS_DATABASE": "oracle:x"})

    def test_duplicateListen(self) -> None:
        """
        The same --listen twice is a usage error or two listeners, never a RuntimeError.
        """
        # Either answer is fine: refuse it as a usage error, or serve both
        # (tcp:0 twice is two ports). A traceback is not.
        arguments = [
            "--listen",
            "tcp:0",
            "--listen",
            "tcp:0",
            "--database",
            "sqlite:" + self.sqlitePath(),
        ]
        options = SocktopusOptions(environ={})
        try:
            options.parseOptions(arguments)
        except usage.UsageError as e:
            self.assertIn("tcp:0", str(e))
            return
        service = makeService(options, MemoryReactorClock())
        self.assertEqual(len([s for s in service if isinstance(s, Listener)]), 2)


class TwistdOptionsTests(InTemporaryDirectory, SynchronousTestCase):
    """
    L{tap.Options}, what twistd parses: one line and exit status 2 on a mistake.
    """

    def setUp(self) -> None:
        super().setUp()
        self.stderr = captureStderr(self)

    def assertOneLineExit(
        self, arguments: list[str], environ: dict[str, str], *fragments: str
    ) -> None:
        options = tap.Options(environ=environ)
        error = self.assertRaises(SystemExit, options.parseOptions, arguments)
        self.assertEqual(error.code, 2)
        output = self.stderr.getvalue()
        self.assertTrue(output.startswith("socktopus: "), output)
        self.assertTrue(output.endswith("\n"), output)
        self.assertEqual(output.count("\n"), 1, output)
        for fragment in fragments:
            self.assertIn(fragment, output)

    def test_isSocktopusOptions(self) -> None:
        """
        twistd's options are the documented ones.
        """
        self.assertTrue(issubclass(tap.Options, SocktopusOptions))

    def test_unknownOption(self) -> None:
        """
        A misspelt option under twistd prints one line and exits 2.
        """
        self.assertOneLineExit(["--bogus"], {}, "--bogus")

    def test_badValue(self) -> None:
        """
        A bad value under twistd prints one line and exits 2.
        """
        self.assertOneLineExit(["--idle-timeout", "-5"], {}, "--idle-timeout", "-5")

    def test_badEnvironment(self) -> None:
        """
        A bad environment variable under twistd prints one line and exits 2.
        """
        self.assertOneLineExit([], {"SOCKTOPUS_DATABASE": "nope"}, "nope")

    def test_badDotEnv(self) -> None:
        """
        A broken .env under twistd prints one line naming the file and line, and exits 2.
        """
        self.writeDotEnv("OK=1\nbroken line\n")
        self.assertOneLineExit([], {}, ".env", "line 2")

    def test_good(self) -> None:
        """
        Valid options under twistd are parsed silently.
        """
        options = tap.Options(environ={})
        options.parseOptions(["--listen", "tcp:0", "--token-lifespan", "6"])
        self.assertEqual(options["token-lifespan"], 6.0)
        self.assertEqual(self.stderr.getvalue(), "")


class MakeServiceTests(InTemporaryDirectory, SynchronousTestCase):
    """
    L{makeService} composes the daemon from parsed options.
    """

    def config(self, *arguments: str) -> SocktopusOptions:
        options = SocktopusOptions(environ={"DEMO_SOCKTOPUS_SECRET": "s"})
        options.parseOptions(
            [
                "--database",
                "sqlite:" + os.path.join(self.directory, "data.sqlite3"),
                *arguments,
            ]
        )
        return options

    def test_children(self) -> None:
        """
        The daemon has its registry, its database and a listener per --listen, all its own children.
        """
        socket = os.path.join(self.directory, "socktopus.sock")
        config = self.config("--listen", "tcp:0:interface=127.0.0.1", "--listen", "unix:" + socket)
        service = makeService(config, MemoryReactorClock())
        self.assertIsInstance(service.getServiceNamed("registry"), LocalRegistry)
        self.assertIsInstance(service.getServiceNamed("database"), DatabaseService)
        listeners = [child for child in service if isinstance(child, Listener)]
        self.assertEqual(
            [listener.description for listener in listeners],
            ["tcp:0:interface=127.0.0.1", "unix:" + socket],
        )
        for child in service:
            self.assertIs(child.parent, service)
        self.assertFalse(service.running)

    def test_registryConfigured(self) -> None:
        """
        --idle-timeout and --token-lifespan reach the registry, with the reactor as its clock.
        """
        config = self.config(
            "--listen", "tcp:0:interface=127.0.0.1", "--idle-timeout", "42", "--token-lifespan", "7"
        )
        fake = MemoryReactorClock()
        registry = makeService(config, fake).getServiceNamed("registry")
        self.assertEqual((registry.idleTimeout, registry.tokenLifespan), (42.0, 7.0))
        self.assertIs(registry.clock, fake)

    def test_listenBacklog(self) -> None:
        """
        Listening sockets queue thousands of connections (clients all
        reconnecting after a restart), unless the endpoint says otherwise.
        """
        for description, backlog in [
            ("tcp:0", 4096),
            ("tcp:0:interface=127.0.0.1:backlog=10", 10),
            ("unix:socktopus.sock", 4096),
        ]:
            fake = MemoryReactorClock()
            service = makeService(self.config("--listen", description), fake)
            service.privilegedStartService()
            [server] = fake.tcpServers or fake.unixServers
            self.assertIn(backlog, server, description)
        self.assertEqual(withBacklog("reuseport:0"), "reuseport:0:backlog=4096")
        self.assertEqual(withBacklog("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0")

    def test_appsServed(self) -> None:
        """
        The daemon serves the apps found in the environment.
        """
        service = makeService(self.config("--listen", "tcp:0"), MemoryReactorClock())
        self.assertEqual(service.apps.names(), ["demo"])

    def test_startAndStopOnFakeReactor(self) -> None:
        """
        The composed daemon listens where asked and stops.
        """
        fake = MemoryReactorClock()
        service = makeService(self.config("--listen", "tcp:0:interface=127.0.0.1"), fake)
        service.privilegedStartService()
        service.startService()
        try:
            self.assertTrue(service.running)
            self.assertEqual(len(fake.tcpServers), 1)
            port, factory, backlog, interface = fake.tcpServers[0]
            self.assertEqual((port, interface, backlog), (0, "127.0.0.1", 4096))
        finally:
            d = service.stopService()
        self.successResultOf(d)
        self.assertFalse(service.running)


class MakeServiceOnReactorTests(InTemporaryDirectory, TestCase):
    """
    L{makeService} on the real reactor: real ports, started and stopped.
    """

    def config(self, *arguments: str) -> SocktopusOptions:
        options = SocktopusOptions(environ={})
        options.parseOptions(
            [
                "--database",
                "sqlite:" + os.path.join(self.directory, "data.sqlite3"),
                *arguments,
            ]
        )
        return options

    @inlineCallbacks
    def test_listensAndStops(self) -> None:
        """
        The daemon listens on the port it was given and releases it when stopped.
        """
        service = makeService(self.config("--listen", "tcp:0:interface=127.0.0.1"), reactor)
        service.privilegedStartService()
        service.startService()
        try:
            listener = next(child for child in service if isinstance(child, Listener))
            address = listener.port.getHost()
            self.assertEqual(address.host, "127.0.0.1")
            self.assertNotEqual(address.port, 0)
        finally:
            yield service.stopService()
        self.assertIsNone(listener.port)

    @inlineCallbacks
    def test_portInUse(self) -> None:
        """
        A port already in use is one line naming the endpoint and exit status 1, not a traceback.
        """
        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        endpoint = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        service = makeService(self.config("--listen", endpoint), reactor)
        stderr = captureStderr(self)
        try:
            error = self.assertRaises(SystemExit, service.privilegedStartService)
        finally:
            # Nothing is listening, but the database pool was made: close it.
            yield service.stopService()
        self.assertEqual(error.code, 1)
        output = stderr.getvalue()
        self.assertEqual(output.count("\n"), 1, output)
        self.assertTrue(output.startswith("socktopus: "), output)
        self.assertIn(endpoint, output)

    @inlineCallbacks
    def test_unixSocketDirectoryMissing(self) -> None:
        """
        A unix socket in a missing directory is one line naming the path and exit status 1.
        """
        path = os.path.join(self.directory, "missing", "socktopus.sock")
        service = makeService(self.config("--listen", "unix:" + path), reactor)
        stderr = captureStderr(self)
        try:
            error = self.assertRaises(SystemExit, service.privilegedStartService)
        finally:
            yield service.stopService()
        self.assertEqual(error.code, 1)
        self.assertEqual(stderr.getvalue().count("\n"), 1, stderr.getvalue())
        self.assertIn(path, stderr.getvalue())
