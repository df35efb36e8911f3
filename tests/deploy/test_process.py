"""
The daemon as users run it: C{twistd -n socktopus} and the C{socktopus}
command as subprocesses of the installed package.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from socktopus_tw.relay.tokens import parseToken
from tests.support.daemon import APP, SECRET, Daemon
from tests.support.process import ROOT, SOCKTOPUS, TWISTD, run


class PluginTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_twistdListsAndDescribesThePlugin(self):
        """
        After installing, twistd knows the socktopus command and its options.
        """
        listing = run(self, TWISTD, "--help")
        self.assertEqual((yield listing.ended), 0)
        self.assertIn(b"socktopus", listing.output)
        usage = run(self, TWISTD, "socktopus", "--help")
        self.assertEqual((yield usage.ended), 0)
        for option in [b"--listen", b"--database", b"--token-lifespan", b"--idle-timeout"]:
            self.assertIn(option, usage.output)


class InstallTests(TestCase):
    """
    A normal (non-editable) install finds the plugin too. The suite itself runs
    from an editable install, which PluginTests covers.
    """

    timeout = 300

    @inlineCallbacks
    def test_normalInstallRegistersPlugin(self):
        """
        `pip install .` into a fresh virtualenv gives a twistd that knows socktopus.
        """
        here = ROOT
        base = os.path.abspath(self.mktemp())
        source = os.path.join(base, "source")
        shutil.copytree(
            here,
            source,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "_trial_temp*", "build", "*.egg-info", "__pycache__"
            ),
        )
        venv = os.path.join(base, "venv")
        python = sys._base_executable
        created = run(self, python, "-m", "venv", venv, path=base)
        self.assertEqual((yield created.ended), 0, created.errors)
        pip = run(
            self,
            os.path.join(venv, "bin", "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            source,
            path=base,
            env={k: v for k, v in os.environ.items() if k.startswith("PIP_")},
        )
        self.assertEqual((yield pip.ended), 0, pip.errors)
        listing = run(self, os.path.join(venv, "bin", "twistd"), "--help", path=base)
        self.assertEqual((yield listing.ended), 0)
        self.assertIn(b"socktopus", listing.output)
        usage = run(self, os.path.join(venv, "bin", "twistd"), "socktopus", "--help", path=base)
        self.assertEqual((yield usage.ended), 0)
        self.assertIn(b"--listen", usage.output)


class StartupMistakeTests(TestCase):
    """
    A user mistake at start is one clear line on stderr and a non-zero exit.
    """

    timeout = 60

    @inlineCallbacks
    def assertOneLine(self, *arguments: str, expect: bytes, env: dict[str, str] | None = None):
        process = run(self, TWISTD, "-n", "--pidfile=", "socktopus", *arguments, env=env)
        status = yield process.ended
        self.assertNotEqual(status, 0)
        lines = process.errors.strip().splitlines()
        self.assertEqual(len(lines), 1, process.errors.decode() + process.output.decode())
        self.assertIn(expect, lines[0])
        self.assertNotIn(b"Traceback", process.output + process.errors)

    def test_unknownOption(self):
        """
        A typo in an option name says which option.
        """
        return self.assertOneLine("--frobnicate", expect=b"frobnicate")

    def test_badNumber(self):
        """
        A non-number for a number of seconds says which option and why.
        """
        return self.assertOneLine("--idle-timeout", "soon", expect=b"--idle-timeout")

    def test_badNumberFromEnvironment(self):
        """
        A bad value in the environment names the variable it came from.
        """
        return self.assertOneLine(
            expect=b"SOCKTOPUS_TOKEN_LIFESPAN", env={"SOCKTOPUS_TOKEN_LIFESPAN": "-1"}
        )

    def test_badEndpoint(self):
        """
        An endpoint string Twisted cannot parse is named with examples.
        """
        return self.assertOneLine("--listen", "tcpp:80", expect=b"tcpp:80")

    def test_unwritableDatabase(self):
        """
        A database path that cannot be created is named before anything listens.
        """
        return self.assertOneLine(
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--database",
            "sqlite:/nonexistent/dir/db.sqlite3",
            expect=b"/nonexistent/dir/db.sqlite3",
        )

    def test_portInUse(self):
        """
        A port another program holds is named, not a traceback.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        return self.assertOneLine(
            "--listen", f"tcp:{port}:interface=127.0.0.1", expect=f"tcp:{port}".encode()
        )


class DaemonProcessTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def startDaemon(
        self, *arguments: str, env: dict[str, str] | None = None, path: str | None = None
    ):
        environment = {f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET}
        environment.update(env or {})
        process = run(
            self, TWISTD, "-n", "--pidfile=", "socktopus", *arguments, env=environment, path=path
        )
        match = yield process.waitFor(rb"Listening on 127\.0\.0\.1:(\d+)")
        return process, int(match.group(1))

    def clientFor(self, port: int) -> Daemon:
        """
        A L{Daemon}-shaped helper aimed at the child's port, for its clients.
        """
        client = Daemon.__new__(Daemon)
        client.port = port
        client.url = f"http://127.0.0.1:{port}"
        client.wsUrl = f"ws://127.0.0.1:{port}"
        client.clients = []
        from twisted.web.client import Agent, HTTPConnectionPool

        client.pool = HTTPConnectionPool(reactor, persistent=False)
        client.agent = Agent(reactor, pool=client.pool)
        return client

    @inlineCallbacks
    def test_sigtermClosesEveryClientAndExitsZero(self):
        """
        systemd stopping the daemon: every client is told CLOSE and closed,
        and the process exits 0.
        """
        process, port = yield self.startDaemon("--listen", "tcp:0:interface=127.0.0.1")
        daemon = self.clientFor(port)
        clients = yield gatherResults([daemon.connect(f"c{i}") for i in range(5)])
        process.transport.signalProcess("TERM")
        closes = yield gatherResults([c.closed for c in clients])
        self.assertEqual([c.received for c in clients], [["CLOSE"]] * 5)
        self.assertTrue(all(wasClean for wasClean, code, reason in closes))
        self.assertEqual((yield process.ended), 0)
        self.assertIn(b"Socktopus stopping", process.output)

    @inlineCallbacks
    def test_sigtermUnderLoadFinishesInFlightSends(self):
        """
        A deploy that stops the daemon mid-batch: the /send already accepted
        is delivered and answered in full before clients get CLOSE, exit 0.
        """
        process, port = yield self.startDaemon("--listen", "tcp:0:interface=127.0.0.1")
        daemon = self.clientFor(port)
        client = yield daemon.connect("c1")
        contents = [f"{n:06d}" + "x" * 94 for n in range(50000)]
        sending = daemon.send([{"recipient": "c1", "content": c} for c in contents])
        yield client.waitFor(1)
        process.transport.signalProcess("TERM")
        status, body, _ = yield sending
        self.assertEqual((status, len(body["succeeded"])), (200, 50000))
        yield client.closed
        self.assertEqual(client.received, ["DATA:" + c for c in contents] + ["CLOSE"])
        self.assertEqual((yield process.ended), 0)

    @inlineCallbacks
    def test_defaultLogIsTwistdsLinesWithoutDebug(self):
        """
        C{twistd -n socktopus} writes twistd's lines (through the daemon's
        own observer) but not the debug line of each /send batch, which
        C{--log-level debug} shows.
        """
        for arguments, debug in (((), False), (("--log-level", "debug"), True)):
            process, port = yield self.startDaemon(
                "--listen", "tcp:0:interface=127.0.0.1", *arguments
            )
            daemon = self.clientFor(port)
            yield daemon.send([{"recipient": "nobody", "content": "hi"}])
            process.transport.signalProcess("TERM")
            self.assertEqual((yield process.ended), 0)
            self.assertRegex(
                process.output,
                rb"\n\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} "
                rb"\[socktopus_tw\.daemon\.SocktopusService#info\] Socktopus stopping\n",
            )
            self.assertIn(
                b"Sent 1 messages for " + APP.encode() + b" in 1 requests", process.output
            )
            batch = b"#debug] Sent 0 messages for " + APP.encode() + b", 1 failed\n"
            self.assertEqual(batch in process.output, debug, arguments)

    @inlineCallbacks
    def test_tokenFromCommandIsAccepted(self):
        """
        The token printed by `socktopus token` opens a connection that
        receives what the backend sends.
        """
        process, port = yield self.startDaemon("--listen", "tcp:0:interface=127.0.0.1")
        command = run(self, SOCKTOPUS, "token", APP, SECRET, "from-cli")
        self.assertEqual((yield command.ended), 0)
        token = command.output.strip().decode()
        self.assertEqual(parseToken(token).connectionId, "from-cli")
        daemon = self.clientFor(port)
        daemon.token = lambda connectionId, **kw: token
        client = yield daemon.connect("from-cli")
        status, body, _ = yield daemon.send([{"recipient": "from-cli", "content": "hi"}])
        self.assertEqual(status, 200)
        self.assertEqual((yield client.waitFor(1)), ["DATA:hi"])
        client.sendClose()
        yield client.closed

    @inlineCallbacks
    def test_dotEnvConfiguresAppsAndListen(self):
        """
        A .env file in the working directory is read; the real environment
        wins over it.
        """
        path = self.mktemp()
        os.makedirs(path)
        with open(os.path.join(path, ".env"), "w") as f:
            f.write(
                "# local settings\n"
                "SOCKTOPUS_LISTEN=tcp:0:interface=127.0.0.1\n"
                "FROMFILE_SOCKTOPUS_SECRET='file-secret'\n"
                f"{APP.upper()}_SOCKTOPUS_SECRET=overridden-by-environment\n"
            )
        process, port = yield self.startDaemon(path=path)
        daemon = self.clientFor(port)
        status, page, _ = yield daemon.request("GET", "/")
        self.assertEqual(status, 200)
        self.assertIn(b"fromfile", page)
        client = yield daemon.connect("c1")  # signed with the environment's secret
        client.sendClose()
        yield client.closed
        self.assertTrue(os.path.exists(os.path.join(path, "socktopus.sqlite3")))


class LogTests(DaemonProcessTests):
    """
    What the daemon writes to its log, read from the real process.
    """

    @inlineCallbacks
    def test_jsonLogsCarryFieldsAndNoSecrets(self):
        """
        An operator shipping JSON logs gets app and connection fields, and
        nothing in the log lets anyone impersonate an app or a user.
        """
        process = run(
            self,
            TWISTD,
            "-n",
            "--pidfile=",
            "--logger",
            "socktopus_tw.logs.json",
            "socktopus",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--bcrypt-rounds",
            "4",
            env={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET},
        )
        match = yield process.waitFor(rb'"address": ?"127\.0\.0\.1:(\d+)"')
        daemon = self.clientFor(int(match.group(1)))

        token = daemon.token("c1")
        client = yield daemon.connect("c1")
        yield daemon.send([{"recipient": "c1", "content": "private message"}])
        yield client.waitFor(1)
        yield daemon.request("GET", "/recieve?token=" + token[:-4] + "beef")
        yield daemon.send([], secret="not-the-secret")
        yield daemon.kick(["c1"])
        yield client.closed

        password, newPassword = "first password", "second password"
        yield daemon.post(
            "/users", {"User": "alice", "Password": password, "Email": "alice@example.com"}
        )
        status, login, _ = yield daemon.post("/login", {"User": "alice", "Password": password})
        self.assertEqual(status, 200)
        secret = login["Secret"]
        now = str(int(time.time()))
        mac = hmac.new(secret.encode(), f"{now}:/authHeaders".encode(), hashlib.sha256)
        headers = {
            "UserID": str(login["UserID"]),
            "Path": "/authHeaders",
            "Time-Sent": now,
            "HMAC": mac.hexdigest(),
        }
        self.assertEqual((yield daemon.request("POST", "/authHeaders", headers=headers))[0], 200)
        yield daemon.request("POST", "/authHeaders", headers=headers)  # a replay, refused
        yield daemon.post("/login", {"User": "alice", "Password": "wrong " + password})
        yield daemon.post(
            "/changePassword", {"User": "alice", "Password": password, "NewPassword": newPassword}
        )
        process.transport.signalProcess("TERM")
        self.assertEqual((yield process.ended), 0)

        log = process.output + process.errors
        events = [json.loads(line) for line in process.output.decode().splitlines() if line.strip()]
        connects = [e for e in events if e.get("message", "").startswith("Connected")]
        self.assertEqual([(e["app"], e["connectionId"]) for e in connects], [(APP, "c1")])
        for forbidden in [
            SECRET,
            token.rsplit("h", 1)[1],
            password,
            newPassword,
            secret,
            mac.hexdigest(),
            "private message",
        ]:
            self.assertNotIn(forbidden.encode(), log, forbidden)
