"""
The deployment files, proven with the real programs: the systemd units are
checked by systemd-analyze and the daemon is started on an inherited socket
the way systemd starts it; the nginx site is checked by nginx -t and run, on
free ports, in front of a real daemon.

The programs come from Debian's packages (systemd, nginx). A missing one is a
failure naming the package, never a skip.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.static import Data

from tests.support.accounts import registerAndLogin, signedHeaders
from tests.support.daemon import APP, SECRET, Daemon
from tests.support.process import ROOT, TWISTD, Process, run

SERVICE = os.path.join(ROOT, "systemd", "socktopus.service")
SOCKET = os.path.join(ROOT, "systemd", "socktopus.socket")
NGINX_SITE = os.path.join(ROOT, "nginx.conf")

#: Where socktopus.service expects the virtualenv's twistd.
INSTALLED_TWISTD = "/opt/socktopus/venv/bin/twistd"
#: Where nginx.conf writes its access log.
INSTALLED_ACCESS_LOG = "/var/log/nginx/socktopus.access.log"
#: The daemon's default --max-body-size, which nginx must match.
BODY_LIMIT = 16 * 1024 * 1024


def findProgram(testCase: TestCase, name: str, package: str) -> str:
    """
    The path of a program the test needs; fails the test (it does not skip)
    naming the Debian package to install.
    """
    path = shutil.which(
        name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
    )
    if path is None:
        testCase.fail(f"{name} is not installed: apt-get install {package}")
    return path


def readUnit(path: str) -> dict[str, dict[str, list[str]]]:
    """
    A systemd unit file as C{{section: {key: [values in order]}}}.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            section.setdefault(key.strip(), []).append(value.strip())
    return sections


def replaceOnce(text: str, old: str, new: str) -> str:
    """
    C{text} with C{old}, which must occur exactly once, replaced: a change to
    a shipped file fails here instead of leaving a test checking something else.
    """
    if text.count(old) != 1:
        raise AssertionError(f"expected {old!r} exactly once in the shipped file")
    return text.replace(old, new)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clientFor(testCase: TestCase, port: int, prefix: str = "") -> Daemon:
    """
    A L{Daemon}-shaped client aimed at 127.0.0.1:C{port} and a path prefix:
    its C{post}, C{send}, C{kick} and C{connect} go there. Its connections are
    closed at cleanup.
    """
    client = Daemon.__new__(Daemon)
    client.port = port
    client.url = f"http://127.0.0.1:{port}{prefix}"
    client.wsUrl = f"ws://127.0.0.1:{port}{prefix}"
    client.clients = []
    client.pool = HTTPConnectionPool(reactor, persistent=False)
    client.agent = Agent(reactor, pool=client.pool)

    def close() -> Deferred[Any]:
        closing = []
        for relayClient in client.clients:
            if not relayClient.closed.called:
                closing.append(relayClient.closed)
                relayClient.dropConnection(abort=True)
        return gatherResults([*closing, client.pool.closeCachedConnections()])

    testCase.addCleanup(close)
    return client


class RawResponse(Protocol):
    """
    Sends one raw HTTP/1.0 request and collects the response until the server
    closes the connection.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.data)


@inlineCallbacks
def rawGet(port: int, target: bytes):
    """
    C{GET target} exactly as written (no client-side URL normalisation);
    fires with C{(status, body)}.
    """
    protocol = RawResponse(b"GET " + target + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: protocol)
    )
    response = yield protocol.done
    return parseResponse(response)


def parseResponse(response: bytes) -> tuple[int, bytes]:
    """
    The status and body of a raw HTTP response.
    """
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@inlineCallbacks
def waitUntilListening(process: Process, port: int, why: str):
    """
    Poll 127.0.0.1:C{port} until it accepts a connection (at most 50 tries),
    failing early if C{process} exits.
    """
    for _ in range(50):
        if process.ended.called:
            raise AssertionError(f"{why} exited: {process.errors.decode()}")
        try:
            connected = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                Factory.forProtocol(Protocol)
            )
        except ConnectionRefusedError:
            yield deferLater(reactor, 0.1, lambda: None)
        else:
            connected.transport.loseConnection()
            return
    raise AssertionError(f"{why} never listened on port {port}")


# -- systemd -------------------------------------------------------------------


class SystemdUnitTests(TestCase):
    """
    The unit files as systemd reads them.
    """

    timeout = 60

    def installedUnits(self) -> str:
        """
        Both units in a directory of their own, with ExecStart pointing at
        this virtualenv's twistd: systemd-analyze checks that the program exists.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        shutil.copy(SOCKET, directory)
        with open(SERVICE) as f:
            service = replaceOnce(
                f.read(), f"ExecStart={INSTALLED_TWISTD} ", f"ExecStart={TWISTD} "
            )
        with open(os.path.join(directory, "socktopus.service"), "w") as f:
            f.write(service)
        return directory

    @inlineCallbacks
    def test_unitsPassSystemdAnalyzeVerify(self):
        """
        systemd loads both units without an error or a warning.
        """
        analyze = findProgram(self, "systemd-analyze", "systemd")
        directory = self.installedUnits()
        verify = run(
            self,
            analyze,
            "verify",
            "--man=no",
            os.path.join(directory, "socktopus.socket"),
            os.path.join(directory, "socktopus.service"),
        )
        status = yield verify.ended
        # Warnings (an unknown key, a bad value) are ignored by systemd and
        # leave the exit status 0, yet mean a setting is not in effect.
        self.assertEqual((status, verify.output + verify.errors), (0, b""))

    @inlineCallbacks
    def test_serviceStaysHardened(self):
        """
        The daemon runs with little access to the machine (exposure 2.0 or less).
        """
        analyze = findProgram(self, "systemd-analyze", "systemd")
        directory = self.installedUnits()
        security = run(
            self,
            analyze,
            "security",
            "--offline=yes",
            "--threshold=20",
            "--no-pager",
            os.path.join(directory, "socktopus.service"),
        )
        status = yield security.ended
        self.assertEqual(status, 0, security.output.decode() + security.errors.decode())
        self.assertIn(b"Overall exposure level", security.output)


class SocketActivationTests(TestCase):
    """
    The daemon started as systemd starts it from socktopus.socket: the
    listening socket on file descriptor 3, C{LISTEN_FDS=1}, C{LISTEN_FDNAMES}
    and C{LISTEN_PID} set to the daemon's own pid, and the service's ExecStart.
    """

    timeout = 60

    def listeningSocket(self) -> socket.socket:
        """
        The socket socktopus.socket describes (address, backlog), on a free port.
        """
        settings = readUnit(SOCKET)["Socket"]
        [address] = settings["ListenStream"]
        host, _, _ = address.rpartition(":")
        family = socket.AF_INET6 if host.startswith("[") or not host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.bind((host.strip("[]") or "::", 0))
        listening.listen(int(settings["Backlog"][0]))
        return listening

    def serviceArguments(self, listening: socket.socket) -> list[str]:
        """
        ExecStart's arguments after the program, checked against the socket:
        the --listen domain must be the socket's address family.
        """
        [execStart] = readUnit(SERVICE)["Service"]["ExecStart"]
        program, *arguments = shlex.split(execStart)
        self.assertEqual(program, INSTALLED_TWISTD)
        endpoint = arguments[arguments.index("--listen") + 1]
        domain = "INET6" if listening.family == socket.AF_INET6 else "INET"
        self.assertEqual(endpoint, f"systemd:domain={domain}:index=0")
        return arguments

    def start(self, listening: socket.socket, path: str) -> Process:
        """
        Run the service's command with C{listening} inherited as fd 3.
        """
        process = Process()
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": path,
            "LISTEN_FDS": "1",
            # systemd (227 and later) names every passed socket, by default
            # after its unit; Twisted ignores passed sockets without names.
            "LISTEN_FDNAMES": "socktopus.socket",
            f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET,
        }
        # LISTEN_PID must be the daemon's own pid, known only after the fork:
        # the shell sets it to its own and execs twistd, which keeps that pid.
        argv = [
            "/bin/sh",
            "-c",
            'LISTEN_PID=$$; export LISTEN_PID; exec "$@"',
            "sh",
            TWISTD,
            *self.serviceArguments(listening),
        ]
        transport = reactor.spawnProcess(
            process,
            argv[0],
            argv,
            env=environment,
            path=path,
            childFDs={0: "w", 1: "r", 2: "r", 3: listening.fileno()},
        )

        def kill() -> Deferred[int] | None:
            if not process.ended.called:
                transport.signalProcess("KILL")
                return process.ended
            return None

        self.addCleanup(kill)
        return process

    @inlineCallbacks
    def startServing(self, listening: socket.socket, path: str):
        """
        Start the daemon and wait until it serves the inherited socket.
        """
        process = self.start(listening, path)
        port = listening.getsockname()[1]
        match = yield process.waitFor(rb"Listening on 127\.0\.0\.1:(\d+)")
        self.assertEqual(int(match.group(1)), port)
        # An answer means the reactor runs, with its SIGTERM handling in place.
        status, _ = yield rawGet(port, b"/")
        self.assertEqual(status, 200)
        return process

    @inlineCallbacks
    def test_daemonServesTheSocketSystemdPasses(self):
        """
        Under socktopus.socket the daemon relays messages and stops cleanly.
        """
        listening = self.listeningSocket()
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        process = yield self.startServing(listening, path)
        daemon = clientFor(self, listening.getsockname()[1])
        client = yield daemon.connect("c1")
        status, body, _ = yield daemon.send([{"recipient": "c1", "content": "hello"}])
        self.assertEqual((status, body["failed"]), (200, []))
        self.assertEqual((yield client.waitFor(1)), ["DATA:hello"])
        # The unit's WorkingDirectory is where the default database lives.
        self.assertTrue(os.path.exists(os.path.join(path, "socktopus.sqlite3")))

        process.transport.signalProcess("TERM")
        yield client.closed
        self.assertEqual(client.received, ["DATA:hello", "CLOSE"])
        self.assertEqual((yield process.ended), 0, process.errors.decode())

    @inlineCallbacks
    def test_connectionsWaitWhileTheDaemonRestarts(self):
        """
        A client connecting while the daemon restarts is served, not refused.
        """
        listening = self.listeningSocket()
        port = listening.getsockname()[1]
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        first = yield self.startServing(listening, path)
        first.transport.signalProcess("TERM")
        self.assertEqual((yield first.ended), 0, first.errors.decode())

        # Nobody serves the socket now; the kernel still completes connections.
        waiting = RawResponse(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: waiting)
        )
        second = yield self.startServing(listening, path)
        status, _ = parseResponse((yield waiting.done))
        self.assertEqual(status, 200)
        second.transport.signalProcess("TERM")
        self.assertEqual((yield second.ended), 0, second.errors.decode())


# -- nginx ---------------------------------------------------------------------


def nginxMain(directory: str, include: str) -> str:
    """
    A complete nginx.conf that keeps everything (pid, logs, temporary files)
    in C{directory} and includes a site inside its http block, as Debian's
    /etc/nginx/nginx.conf includes conf.d/*.conf.
    """
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};"
        for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    )
    # As root, nginx would otherwise hand its temporary files to "nobody".
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\n"
        # One process: nothing is left behind if the test kills it.
        "master_process off;\n"
        f"pid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log notice;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {directory}/other-access.log;\n"
        f"{temp}\n"
        f"    include {include};\n"
        "}\n"
    )


class NginxConfigTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_shippedSitePassesNginxTest(self):
        """
        nginx -t accepts the site as shipped, in the http block like conf.d/.
        """
        nginx = findProgram(self, "nginx", "nginx")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(NGINX_SITE) as f:
            # Only the log moves, so the check touches nothing outside this test.
            site = replaceOnce(
                f.read(), INSTALLED_ACCESS_LOG, os.path.join(directory, "access.log")
            )
        include = os.path.join(directory, "socktopus.conf")
        with open(include, "w") as f:
            f.write(site)
        main = os.path.join(directory, "nginx.conf")
        with open(main, "w") as f:
            f.write(nginxMain(directory, include))
        check = run(
            self,
            nginx,
            "-t",
            "-c",
            main,
            "-p",
            directory + "/",
            "-e",
            os.path.join(directory, "error.log"),
        )
        self.assertEqual((yield check.ended), 0, check.errors.decode())
        self.assertIn(b"test is successful", check.errors)


class MetricsStandIn(Data):
    """
    What the daemon would answer on /metrics if nginx let the request through.
    """

    def __init__(self) -> None:
        super().__init__(b"socktopus_connections 1\n", "text/plain")


class EchoRequest(Resource):
    """
    Answers with the request as the daemon received it, as JSON: its target,
    protocol, headers, and the port nginx's connection came from.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        headers = {
            name.decode().lower(): b", ".join(values).decode()
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "uri": request.uri.decode(),
                "protocol": request.clientproto.decode(),
                "headers": headers,
                "peerPort": request.getClientAddress().port,
            }
        ).encode()


class NginxTests(TestCase):
    """
    The shipped site, rendered onto free ports, in front of a real daemon.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        nginx = findProgram(self, "nginx", "nginx")
        # The daemon's own body limit is raised, so a 413 can only be nginx's.
        self.daemon = Daemon(self, "--bcrypt-rounds", "4", "--max-body-size", "64MiB")
        root = next(s for s in self.daemon.service if s.name.startswith("listen")).factory.resource
        root.putChild(b"metrics", MetricsStandIn())
        root.putChild(b"echo", EchoRequest())

        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.port = freePort()
        with open(NGINX_SITE) as f:
            site = f.read()
        site = replaceOnce(site, "server 127.0.0.1:8080;", f"server 127.0.0.1:{self.daemon.port};")
        site = replaceOnce(site, "listen 80;", f"listen 127.0.0.1:{self.port};")
        site = replaceOnce(site, "listen [::]:80;", "")
        self.accessLog = os.path.join(self.directory, "access.log")
        site = replaceOnce(site, INSTALLED_ACCESS_LOG, self.accessLog)
        include = os.path.join(self.directory, "socktopus.conf")
        with open(include, "w") as f:
            f.write(site)
        main = os.path.join(self.directory, "nginx.conf")
        with open(main, "w") as f:
            f.write(nginxMain(self.directory, include))
        arguments = [
            "-c",
            main,
            "-p",
            self.directory + "/",
            "-e",
            os.path.join(self.directory, "error.log"),
        ]

        check = run(self, nginx, "-t", *arguments)
        self.assertEqual((yield check.ended), 0, check.errors.decode())
        # Stopped with SIGKILL at cleanup (by run): it is one process.
        process = run(self, nginx, *arguments)
        yield waitUntilListening(process, self.port, "nginx")

    @inlineCallbacks
    def assertRelayWorks(self, prefix: str, path: str):
        """
        Through nginx under C{prefix}: a WebSocket on C{path} opens, gets what
        C{/send} sends, and a C{/kick} closes it after C{CLOSE}.
        """
        proxy = clientFor(self, self.port, prefix)
        client = yield proxy.connect("c1", path=path)
        status, body, _ = yield proxy.send([{"recipient": "c1", "content": "hello"}])
        self.assertEqual((status, body["failed"]), (200, []))
        self.assertEqual((yield client.waitFor(1)), ["DATA:hello"])
        status, body, _ = yield proxy.kick(["c1"])
        self.assertEqual((status, body), (200, {"kicked": ["c1"], "notConnected": []}))
        yield client.closed
        self.assertEqual(client.received, ["DATA:hello", "CLOSE"])

    def test_relayWorksThroughNginx(self):
        """
        A WebSocket through nginx receives what /send sends and /kick closes it.
        """
        return self.assertRelayWorks("", "/recieve")

    def test_relayAliasWorksThroughNginx(self):
        """
        The /receive spelling works through nginx too.
        """
        return self.assertRelayWorks("", "/receive")

    def test_relayWorksUnderTheSocktopusPrefix(self):
        """
        /socktopus/recieve, /socktopus/send and /socktopus/kick reach the relay.
        """
        return self.assertRelayWorks("/socktopus", "/recieve")

    @inlineCallbacks
    def test_authHeadersWorkUnderTheAuthPrefix(self):
        """
        Under /auth/, signed requests work when Path is the path without /auth.
        """
        accounts = clientFor(self, self.port, "/auth")
        userId, secret = yield registerAndLogin(accounts, "alice")
        status, body, _ = yield accounts.post(
            "/logout", None, headers=signedHeaders(userId, secret, "/auth/logout")
        )
        self.assertEqual((status, body), (401, {"Error": "Not Authorized Request"}))
        status, _, _ = yield accounts.post(
            "/logout", None, headers=signedHeaders(userId, secret, "/logout")
        )
        self.assertEqual(status, 200)
        # The logout took effect: the secret no longer signs anything.
        status, _, _ = yield accounts.post(
            "/authHeaders", None, headers=signedHeaders(userId, secret, "/authHeaders")
        )
        self.assertEqual(status, 401)

    @inlineCallbacks
    def test_metricsAreNotServedThroughNginx(self):
        """
        /metrics stays private: no prefix or spelling gets it through nginx.
        """
        status, body = yield rawGet(self.daemon.port, b"/metrics")
        self.assertEqual((status, body), (200, b"socktopus_connections 1\n"))
        for target in [
            b"/metrics",
            b"/metrics/",
            b"/metrics?x=1",
            b"/socktopus/metrics",
            b"/auth/metrics",
            b"/%6detrics",
            b"//metrics",
            b"/socktopus/../metrics",
        ]:
            status, body = yield rawGet(self.port, target)
            self.assertEqual(
                (target, status, json.loads(body)),
                (target, 404, {"code": 404, "message": "Not found"}),
            )

    @inlineCallbacks
    def test_bodiesOverTheLimitAreRefusedByNginx(self):
        """
        nginx passes a 16 MiB body and refuses a larger one with the JSON 413.
        """
        proxy = clientFor(self, self.port)
        request = json.dumps(
            {
                "secretName": APP,
                "secret": SECRET,
                "messages": [{"recipient": "nobody", "content": "x"}],
            }
        ).encode()
        status, body, _ = yield proxy.post("/send", request.ljust(BODY_LIMIT))
        self.assertEqual((status, body["failed"]), (200, [{"recipient": "nobody", "content": "x"}]))
        status, body, response = yield proxy.post("/send", request.ljust(BODY_LIMIT + 1))
        self.assertEqual((status, body), (413, {"code": 413, "message": "Request body too large"}))
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])

    @inlineCallbacks
    def test_daemonSeesTheClientAddress(self):
        """
        The daemon is told the client's address, the scheme and the host asked for.
        """
        proxy = clientFor(self, self.port, "/socktopus")
        status, body, _ = yield proxy.request(
            "GET", "/echo?a=1", headers={"X-Forwarded-For": "203.0.113.9"}
        )
        self.assertEqual(status, 200)
        self.assertEqual(body["uri"], "/echo?a=1")
        headers = body["headers"]
        self.assertEqual(
            {
                name: headers.get(name)
                for name in ["host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto"]
            },
            {
                "host": "127.0.0.1",
                "x-real-ip": "127.0.0.1",
                "x-forwarded-for": "203.0.113.9, 127.0.0.1",
                "x-forwarded-proto": "http",
            },
        )

    @inlineCallbacks
    def test_nginxKeepsItsConnectionToTheDaemon(self):
        """
        Requests through nginx reuse one HTTP/1.1 connection to the daemon.
        """
        proxy = clientFor(self, self.port)
        first = (yield proxy.request("GET", "/echo"))[1]
        second = (yield proxy.request("GET", "/echo"))[1]
        self.assertEqual((first["protocol"], "connection" in first["headers"]), ("HTTP/1.1", False))
        self.assertEqual(second["peerPort"], first["peerPort"])

    @inlineCallbacks
    def test_accessLogHoldsNoToken(self):
        """
        nginx's access log records relay connections without their tokens.
        """
        proxy = clientFor(self, self.port)
        client = yield proxy.connect("c1")
        token = client.factory.url.rpartition("token=")[2]
        client.sendClose()
        yield client.closed
        log = b""
        for _ in range(50):
            with open(self.accessLog, "rb") as f:
                log = f.read()
            if b"/recieve" in log:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertIn(b'"GET /recieve HTTP/1.1" 101', log)
        self.assertNotIn(token.encode(), log)
        self.assertNotIn(b"token=", log)
