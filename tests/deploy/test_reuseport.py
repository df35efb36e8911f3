"""
Several daemons on one machine sharing one port with C{SO_REUSEPORT}
(SPEC §6): the C{reuseport:} endpoint in this process, real daemons started
with it, and the systemd template pair (C{socktopus@.socket},
C{socktopus@.service}) checked by systemd-analyze and run the way systemd
runs two of its instances, as one cluster on one Redis.

The kernel spreads connections by a hash of their addresses, so which
daemon gets a connection is not known in advance; the tests open many (each
from a new source port) and ask each daemon how many it served. Nothing
waits for a fixed time and no port is fixed: the first daemon listens on
port 0 and the others join the port it got.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import socket
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.plugin import getPlugins
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from socktopus_tw.daemon import listenFailure
from socktopus_tw.http.reuseport import USAGE, ReusePortParser, ReusePortServerEndpoint
from socktopus_tw.http.writing import canWriteNow
from socktopus_tw.settings import ConfigurationError, checkEndpoint
from tests.deploy.test_deploy import (
    INSTALLED_TWISTD,
    clientFor,
    findProgram,
    rawGet,
    readUnit,
    replaceOnce,
)
from tests.support.daemon import APP, SECRET
from tests.support.process import ROOT, TWISTD, Process, run
from tests.support.redis import RedisServer

SOCKET = os.path.join(ROOT, "systemd", "socktopus@.socket")
SERVICE = os.path.join(ROOT, "systemd", "socktopus@.service")

#: New connections made to a shared port: enough that each of two daemons
#: gets some (all on one would happen once in 2**(CONNECTIONS-1) runs).
CONNECTIONS = 40

#: What C{"Listening on ..."} says of a daemon's relay port and of its
#: metrics port (--metrics-listen tcp:0:interface=127.0.0.1).
RELAY_PORT = rb"Listening on 127\.0\.0\.1:(\d+) \(reuseport:"
METRICS_PORT = rb"Listening on 127\.0\.0\.1:(\d+) \(tcp:0:interface=127\.0\.0\.1\)"
#: ... and of the port of its own a systemd-started node is given for the test.
OWN_PORT = rb"Listening on 127\.0\.0\.1:(\d+) \(tcp:0:interface=127\.0\.0\.1:backlog=8\)"


def served(metrics: bytes, endpoint: str) -> int:
    """
    How many requests the resource C{endpoint} answered, from a C{/metrics} page.
    """
    match = re.search(
        rb'^socktopus_request_seconds_count\{endpoint="' + endpoint.encode() + rb'"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return int(float(match.group(1))) if match else 0


@inlineCallbacks
def servedBy(metricsPorts: list[int], endpoint: str):
    """
    How many requests to C{endpoint} each daemon answered, by its metrics port.
    """
    counts = []
    for port in metricsPorts:
        status, body = yield rawGet(port, b"/metrics")
        if status != 200:
            raise AssertionError(f"/metrics on port {port}: {status} {body!r}")
        counts.append(served(body, endpoint))
    return counts


# -- the endpoint, in this process --------------------------------------------


class Greeter(Protocol):
    """
    Says which server it is and hangs up; tells its factory what its
    transport is, and whether the fast path would write to it directly.
    """

    def connectionMade(self) -> None:
        # Asked now: a closed connection has no socket left to write to.
        self.factory.transports.append((type(self.transport), canWriteNow(self.transport)))
        self.transport.write(self.factory.name)
        self.transport.loseConnection()


class Listener(Protocol):
    """
    A client that keeps what the server says until it hangs up.
    """

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.data)


def greeter(name: bytes) -> Factory:
    factory = Factory.forProtocol(Greeter)
    factory.name = name
    factory.transports = []
    return factory


class ReusePortEndpointTests(TestCase):
    """
    C{reuseport:} as serverFromString builds it, listening in this process.
    """

    timeout = 30

    def listen(self, description: str, factory: Factory):
        """
        Listen on C{description}, synchronously as the daemon's Listener
        needs; the port is closed at cleanup.
        """
        outcome: list[Any] = []
        serverFromString(reactor, description).listen(factory).addBoth(outcome.append)
        [port] = outcome
        if not isinstance(port, tcp.Port):
            port.raiseException()
        self.addCleanup(port.stopListening)
        return port

    def test_pluginIsFound(self):
        """
        Twisted's plugin system finds the parser, and it provides its interface.
        """
        [parser] = [
            p
            for p in getPlugins(IStreamServerEndpointStringParser)
            if isinstance(p, ReusePortParser)
        ]
        self.assertTrue(verifyObject(IStreamServerEndpointStringParser, parser))
        self.assertEqual(parser.prefix, "reuseport")

    def test_parsesPortInterfaceAndBacklog(self):
        """
        The options are those of tcp:; an IPv6 interface makes an IPv6 socket.
        """
        endpoint = serverFromString(reactor, "reuseport:8080:interface=127.0.0.1:backlog=1024")
        self.assertIsInstance(endpoint, ReusePortServerEndpoint)
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))
        self.assertEqual(
            (endpoint._port, endpoint._interface, endpoint._backlog, endpoint.family),
            (8080, "127.0.0.1", 1024, socket.AF_INET),
        )
        everywhere = serverFromString(reactor, "reuseport:8080")
        self.assertEqual((everywhere._interface, everywhere._backlog), ("", 50))
        ipv6 = serverFromString(reactor, r"reuseport:8080:interface=\:\:1")
        self.assertEqual((ipv6._interface, ipv6.family), ("::1", socket.AF_INET6))

    def test_mistakesSayWhatToWrite(self):
        """
        An address put first, a port that is no number, an unknown option:
        each a ValueError saying what the string should look like.
        """
        for description, expected in [
            ("reuseport:127.0.0.1:8080", USAGE),
            ("reuseport:http", "the port must be a number from 0 to 65535, not 'http'"),
            ("reuseport:8080:iface=127.0.0.1", f"reuseport: has no option iface=; {USAGE}"),
            ("reuseport:8080:backlog=many", "backlog= must be a number, not 'many'"),
        ]:
            error = self.assertRaises(ValueError, serverFromString, reactor, description)
            self.assertEqual(str(error), expected)

    def test_outOfRangePortRefusedByTheOptionCheck(self):
        """
        A port out of range is refused when the options are checked, with
        the same sentence as for tcp:.
        """
        for port in ["65536", "-1"]:
            error = self.assertRaises(
                ConfigurationError, checkEndpoint, "--listen", f"reuseport:{port}"
            )
            self.assertEqual(
                str(error),
                f"--listen 'reuseport:{port}': port {port} is out of range; a port is 0 to "
                "65535 (0 picks a free one)",
            )
        checkEndpoint("--listen", "reuseport:8080:interface=127.0.0.1")

    @inlineCallbacks
    def test_twoListenOnOnePortAndShareItsConnections(self):
        """
        Two endpoints listen on one port at once, and new connections to it
        go to both. What accepts them are Twisted's own TCP transports,
        which the fast path writes to directly.
        """
        first = self.listen("reuseport:0:interface=127.0.0.1", greeter(b"first"))
        port = first.getHost().port
        second = self.listen(f"reuseport:{port}:interface=127.0.0.1", greeter(b"second"))
        self.assertEqual(second.getHost().port, port)

        @inlineCallbacks
        def hello():
            listener = Listener()
            yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                Factory.forProtocol(lambda: listener)
            )
            return (yield listener.done)

        greetings = yield gatherResults([hello() for _ in range(CONNECTIONS)])
        self.assertEqual(set(greetings), {b"first", b"second"})
        transports = first.factory.transports + second.factory.transports
        self.assertEqual(len(transports), CONNECTIONS)
        self.assertEqual(set(transports), {(tcp.Server, True)})

    def test_ipv6(self):
        """
        An IPv6 interface listens on IPv6.
        """
        port = self.listen(r"reuseport:0:interface=\:\:1", greeter(b"six"))
        host = port.getHost()
        self.assertEqual((host.type, host.host), ("TCP", "::1"))

    def test_addressInUseWithoutTheOption(self):
        """
        A socket on the port that did not set SO_REUSEPORT makes listening
        fail with a CannotListenError, which the daemon words as an address
        in use.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        failures: list[Any] = []
        endpoint = serverFromString(reactor, f"reuseport:{port}:interface=127.0.0.1")
        endpoint.listen(greeter(b"late")).addErrback(failures.append)
        [failure] = failures
        failure.trap(CannotListenError)
        error = failure.value
        self.assertEqual(
            (error.interface, error.port, error.socketError.errno),
            ("127.0.0.1", port, errno.EADDRINUSE),
        )
        self.assertIn("the address is already in use", listenFailure("reuseport:...", error))


# -- real daemons ---------------------------------------------------------------


class ReusePortDaemonTests(TestCase):
    """
    C{twistd -n socktopus --listen reuseport:...} as users run it.
    """

    timeout = 60

    def daemon(self, *arguments: str) -> Process:
        return run(
            self,
            TWISTD,
            "-n",
            "--pidfile=",
            "socktopus",
            *arguments,
            env={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET},
        )

    @inlineCallbacks
    def startReusing(self, port: int = 0):
        """
        A daemon on C{reuseport:PORT} of 127.0.0.1 with its metrics on a
        port of its own; fires with (process, relay port, metrics port).
        """
        process = self.daemon(
            "--listen",
            f"reuseport:{port}:interface=127.0.0.1",
            "--metrics-listen",
            "tcp:0:interface=127.0.0.1",
        )
        relay = yield process.waitFor(RELAY_PORT)
        metrics = yield process.waitFor(METRICS_PORT)
        return process, int(relay.group(1)), int(metrics.group(1))

    @inlineCallbacks
    def assertOneLine(self, process: Process, expected: bytes):
        """
        C{process} exits non-zero with one line on stderr, C{expected} in it.
        """
        status = yield process.ended
        self.assertNotEqual(status, 0)
        lines = process.errors.strip().splitlines()
        self.assertEqual(len(lines), 1, process.errors.decode() + process.output.decode())
        self.assertIn(expected, lines[0])
        self.assertNotIn(b"Traceback", process.output + process.errors)

    @inlineCallbacks
    def test_twoDaemonsShareOnePort(self):
        """
        Two daemons start on one reuseport: port, and connections to it are
        answered by both: each one's /metrics counts some of the /health
        requests, and together they count every one.
        """
        first, port, firstMetrics = yield self.startReusing()
        second, secondPort, secondMetrics = yield self.startReusing(port)
        self.assertEqual(secondPort, port)

        # rawGet makes a new connection (a new source port) each time.
        answers = yield gatherResults([rawGet(port, b"/health") for _ in range(CONNECTIONS)])
        self.assertEqual(set(answers), {(200, b'{"status":"ok"}')})
        counts = yield servedBy([firstMetrics, secondMetrics], "Health")
        self.assertEqual(sum(counts), CONNECTIONS, counts)
        self.assertNotIn(0, counts)

        for process in (first, second):
            process.transport.signalProcess("TERM")
            self.assertEqual((yield process.ended), 0, process.errors.decode())

    @inlineCallbacks
    def test_portHeldByATcpDaemon(self):
        """
        A tcp: daemon on the port (no SO_REUSEPORT) makes a reuseport:
        daemon fail to start with one line; the tcp: one goes on serving.
        """
        holder = self.daemon("--listen", "tcp:0:interface=127.0.0.1")
        match = yield holder.waitFor(rb"Listening on 127\.0\.0\.1:(\d+)")
        port = int(match.group(1))
        late = self.daemon("--listen", f"reuseport:{port}:interface=127.0.0.1")
        yield self.assertOneLine(
            late,
            f"cannot listen on reuseport:{port}:interface=127.0.0.1: the address is already "
            "in use".encode(),
        )
        self.assertEqual((yield rawGet(port, b"/health"))[0], 200)

    @inlineCallbacks
    def test_tcpDaemonOnAReusedPort(self):
        """
        The other way round: a tcp: daemon cannot join a reuseport: port.
        """
        _, port, _ = yield self.startReusing()
        late = self.daemon("--listen", f"tcp:{port}:interface=127.0.0.1")
        yield self.assertOneLine(late, f"cannot listen on tcp:{port}:interface=127.0.0.1".encode())

    def test_outOfRangePort(self):
        """
        A port out of range is one line at the option check.
        """
        return self.assertOneLine(
            self.daemon("--listen", "reuseport:65536:interface=127.0.0.1"),
            b"port 65536 is out of range",
        )


# -- systemd: socktopus@.socket and socktopus@.service ---------------------------


class SystemdTemplateTests(TestCase):
    """
    The template units as systemd reads them.
    """

    timeout = 60

    def installedUnits(self) -> str:
        """
        Both templates in a directory of their own, ExecStart pointing at
        this virtualenv's twistd (systemd-analyze checks the program exists).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        shutil.copy(SOCKET, directory)
        with open(SERVICE) as f:
            service = replaceOnce(
                f.read(), f"ExecStart={INSTALLED_TWISTD} ", f"ExecStart={TWISTD} "
            )
        with open(os.path.join(directory, "socktopus@.service"), "w") as f:
            f.write(service)
        return directory

    @inlineCallbacks
    def test_instancesPassSystemdAnalyzeVerify(self):
        """
        systemd loads an instance of both templates without an error or a
        warning (it checks the socket's Service= names a unit it can load).
        """
        analyze = findProgram(self, "systemd-analyze", "systemd")
        directory = self.installedUnits()
        verify = run(
            self,
            analyze,
            "verify",
            "--man=no",
            os.path.join(directory, "socktopus@1.socket"),
            os.path.join(directory, "socktopus@1.service"),
        )
        status = yield verify.ended
        self.assertEqual((status, verify.output + verify.errors), (0, b""))

    @inlineCallbacks
    def test_serviceStaysHardened(self):
        """
        Each node runs with as little access as socktopus.service (2.0 or less).
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
            os.path.join(directory, "socktopus@1.service"),
        )
        status = yield security.ended
        self.assertEqual(status, 0, security.output.decode() + security.errors.decode())
        self.assertIn(b"Overall exposure level", security.output)

    def test_eachInstanceHasASocketSharingThePort(self):
        """
        An instance's socket shares its port and starts that instance's
        service, which needs it; the instances run as one user.
        """
        sockets = readUnit(SOCKET)
        service = readUnit(SERVICE)
        self.assertEqual(sockets["Socket"]["ReusePort"], ["yes"])
        self.assertEqual(sockets["Socket"]["Service"], ["socktopus@%i.service"])
        self.assertEqual(service["Unit"]["Requires"], ["socktopus@%i.socket"])
        self.assertIn("socktopus@%i.socket", service["Unit"]["After"])
        self.assertEqual(service["Install"]["Also"], ["socktopus@%i.socket"])
        self.assertEqual(
            (service["Service"]["DynamicUser"], service["Service"]["User"]),
            (["yes"], ["socktopus"]),
        )

    @inlineCallbacks
    def test_refusesToStartWithoutRedis(self):
        """
        ExecStartPre stops an instance that would not be in the cluster,
        with one line saying what to set, and lets one with Redis start.
        """
        [pre] = readUnit(SERVICE)["Service"]["ExecStartPre"]
        # systemd makes $$ a $ (and would substitute a lone $VARIABLE itself).
        program, *arguments = [word.replace("$$", "$") for word in shlex.split(pre)]
        without = run(self, program, *arguments)
        self.assertEqual((yield without.ended), 1)
        self.assertEqual(
            without.errors,
            b"socktopus: instances sharing a port must be one cluster: set SOCKTOPUS_REDIS "
            b"in /etc/socktopus/env\n",
        )
        withRedis = run(
            self, program, *arguments, env={"SOCKTOPUS_REDIS": "redis://127.0.0.1:6379/0"}
        )
        self.assertEqual(((yield withRedis.ended), withRedis.errors), (0, b""))


class TemplateActivationTests(TestCase):
    """
    Two instances started as systemd starts them from socktopus@.socket:
    each its own socket, bound with SO_REUSEPORT to one address, as file
    descriptor 3 (C{LISTEN_FDS}, C{LISTEN_FDNAMES}, C{LISTEN_PID}), the
    service's ExecStart, and the cluster's Redis in the environment.
    """

    timeout = 60

    def sockets(self, count: int) -> list[socket.socket]:
        """
        C{count} sockets as socktopus@.socket describes them (address,
        ReusePort=, Backlog=), all on one free port.
        """
        settings = readUnit(SOCKET)["Socket"]
        [address] = settings["ListenStream"]
        host, _, _ = address.rpartition(":")
        family = socket.AF_INET6 if host.startswith("[") or not host else socket.AF_INET
        port = 0
        sockets = []
        for _ in range(count):
            listening = socket.socket(family, socket.SOCK_STREAM)
            self.addCleanup(listening.close)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if settings["ReusePort"] == ["yes"]:
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind((host.strip("[]") or "::", port))
            listening.listen(int(settings["Backlog"][0]))
            port = listening.getsockname()[1]
            sockets.append(listening)
        return sockets

    def serviceArguments(self, listening: socket.socket) -> list[str]:
        """
        ExecStart's arguments after the program; its --listen domain must
        be the socket's address family.
        """
        [execStart] = readUnit(SERVICE)["Service"]["ExecStart"]
        program, *arguments = shlex.split(execStart)
        self.assertEqual(program, INSTALLED_TWISTD)
        endpoint = arguments[arguments.index("--listen") + 1]
        domain = "INET6" if listening.family == socket.AF_INET6 else "INET"
        self.assertEqual(endpoint, f"systemd:domain={domain}:index=0")
        return arguments

    def start(self, instance: str, listening: socket.socket, redisUrl: str) -> Process:
        """
        Run instance C{instance}'s command with C{listening} as fd 3.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        process = Process()
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": path,
            "LISTEN_FDS": "1",
            "LISTEN_FDNAMES": f"socktopus@{instance}.socket",
            # From /etc/socktopus/env, shared by every instance:
            "SOCKTOPUS_REDIS": redisUrl,
            f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET,
            # From /etc/socktopus/%i.env: each node's metrics on a port of its own.
            "SOCKTOPUS_METRICS_LISTEN": "tcp:0:interface=127.0.0.1",
        }
        argv = [
            "/bin/sh",
            "-c",
            'LISTEN_PID=$$; export LISTEN_PID; exec "$@"',
            "sh",
            TWISTD,
            *self.serviceArguments(listening),
            # Not in the unit: a port of this node alone, for the test to
            # wait until it counts the other node's client.
            "--listen",
            "tcp:0:interface=127.0.0.1:backlog=8",
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
    def settled(self, ports: list[int], clients: int):
        """
        Every node's home page counts C{clients} clients on two nodes: a
        client counted everywhere is reachable from everywhere.
        """
        for _ in range(200):
            seen = []
            for port in ports:
                status, body = yield rawGet(port, b"/?format=json")
                self.assertEqual(status, 200, body)
                home = json.loads(body)
                seen.append((home["clients"], home["nodes"]))
            if seen == [(clients, 2)] * len(ports):
                return
            yield deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"the nodes never agreed: {seen}")

    @inlineCallbacks
    def test_twoInstancesAreOneRelayOnOnePort(self):
        """
        Two instances serve one port and are one relay: a client that
        connected through it receives every message posted through it, on
        a new connection each, whichever node the kernel gave each to; and
        both nodes answered some. Both stop cleanly.
        """
        redis = RedisServer(self)
        shared = self.sockets(2)
        port = shared[0].getsockname()[1]
        nodes = [self.start(str(i + 1), s, redis.url) for i, s in enumerate(shared)]
        own, metrics = [], []
        for node in nodes:
            match = yield node.waitFor(rb"Listening on 127\.0\.0\.1:(\d+) \(systemd:")
            self.assertEqual(int(match.group(1)), port)
            match = yield node.waitFor(OWN_PORT)
            own.append(int(match.group(1)))
            match = yield node.waitFor(METRICS_PORT)
            metrics.append(int(match.group(1)))
            yield node.waitFor(rb"Cluster node \w+ of Redis")

        daemon = clientFor(self, port)
        client = yield daemon.connect("c1")
        yield self.settled(own, clients=1)
        for number in range(CONNECTIONS):
            # clientFor's pool is not persistent: a new connection each time.
            status, body, _ = yield daemon.send([{"recipient": "c1", "content": str(number)}])
            self.assertEqual((status, body["failed"]), (200, []), body)
        received = yield client.waitFor(CONNECTIONS)
        self.assertEqual(received, [f"DATA:{n}" for n in range(CONNECTIONS)])
        counts = yield servedBy(metrics, "SendResource")
        self.assertEqual(sum(counts), CONNECTIONS, counts)
        self.assertNotIn(0, counts)

        for node in nodes:
            node.transport.signalProcess("TERM")
        yield client.closed
        self.assertEqual(client.received[-1], "CLOSE")
        for node in nodes:
            self.assertEqual((yield node.ended), 0, node.errors.decode())
