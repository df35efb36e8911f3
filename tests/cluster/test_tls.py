"""
C{--redis rediss://HOST:PORT} against a real Redis speaking TLS, with a
certificate from a CA made for the test: the start-up probe (the C{ssl}
module) and the daemon's connections (Twisted's C{optionsForClientTLS}) both
trust the system's CAs or C{SSL_CERT_FILE}, check the host name, and a
node over TLS is one cluster with a node on Redis' unix socket.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from socktopus_tw.cluster.redis import probe
from socktopus_tw.cluster.redisurl import parseRedisUrl
from socktopus_tw.errors import StartupError
from tests.support.daemon import Daemon
from tests.support.fastpath import say
from tests.support.redis import CertificateAuthority, RedisServer

#: Seconds a TLS connection to a local Redis may take before a test fails.
WITHIN = 5.0


def trust(testCase: TestCase, caFile: str | None) -> None:
    """
    For the rest of the test, trust C{caFile} in place of the system's CA
    bundle or, with C{None}, the system's CAs. Both C{SSL_CERT_FILE} and
    C{SSL_CERT_DIR} are cleared first, since a shell may set them (to the
    system's). OpenSSL reads them from the process' environment each time a
    context loads its default paths, and C{os.environ} writes through to it.
    """
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        if name in os.environ:
            testCase.addCleanup(os.environ.__setitem__, name, os.environ[name])
        else:
            testCase.addCleanup(os.environ.pop, name, None)
        os.environ.pop(name, None)
    if caFile is not None:
        os.environ["SSL_CERT_FILE"] = caFile


class _Ping(Protocol):
    """
    Sends Redis an inline C{PING}; C{answered} fires with the first bytes
    back, or fails with the reason the connection was lost.
    """

    def __init__(self) -> None:
        self.answered: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"PING\r\n")

    def dataReceived(self, data: bytes) -> None:
        if not self.answered.called:
            self.answered.callback(data)
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if not self.answered.called:
            self.answered.errback(reason)


@inlineCallbacks
def ping(url: str):
    """
    C{PING} through the endpoint the daemon's connections use for C{url}.
    """
    endpoint = parseRedisUrl(url).endpoint(reactor)
    protocol = yield endpoint.connect(Factory.forProtocol(_Ping))
    answer = yield protocol.answered.addTimeout(WITHIN, reactor)
    return answer


class ProbeTests(TestCase):
    """
    The start-up probe over C{rediss}: the version when the certificate is
    trusted and names the host, else one line saying why not.
    """

    def assertOneLine(self, caught: StartupError, redis: RedisServer, *wanted: str) -> None:
        message = str(caught)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("--redis rediss://"), message)
        self.assertIn(f":{redis.tlsPort}: cannot reach Redis: ", message)
        for text in wanted:
            self.assertIn(text, message)

    def test_trustedCaAnswersWithTheVersion(self):
        redis = RedisServer(self, tls=True)
        trust(self, redis.ca.caFile)
        version, denied = probe(parseRedisUrl(redis.tlsUrl), deniedSince=0)
        self.assertRegex(version, r"^\d+\.\d+")
        self.assertEqual(denied, [])

    def test_anIpAddressIsCheckedAgainstTheCertificatesAddresses(self):
        redis = RedisServer(self, tls=True)
        trust(self, redis.ca.caFile)
        version, _ = probe(parseRedisUrl(f"rediss://127.0.0.1:{redis.tlsPort}"))
        self.assertRegex(version, r"^\d+\.\d+")

    def test_passwordOverTls(self):
        redis = RedisServer(self, tls=True, password="right")
        trust(self, redis.ca.caFile)
        self.assertTrue(probe(parseRedisUrl(f"rediss://:right@localhost:{redis.tlsPort}/3")))
        with self.assertRaises(StartupError) as caught:
            probe(parseRedisUrl(f"rediss://:hunter2@localhost:{redis.tlsPort}"))
        self.assertIn("Redis refused", str(caught.exception))
        self.assertNotIn("hunter2", str(caught.exception))

    def test_thePrivateCaIsNotTrustedByTheSystem(self):
        redis = RedisServer(self, tls=True)
        trust(self, None)
        with self.assertRaises(StartupError) as caught:
            probe(parseRedisUrl(redis.tlsUrl), timeout=WITHIN)
        self.assertOneLine(caught.exception, redis, "certificate verify failed")

    def test_anotherCaIsNotTrusted(self):
        redis = RedisServer(self, tls=True)
        trust(self, CertificateAuthority(_directory(self), "Other CA").caFile)
        with self.assertRaises(StartupError) as caught:
            probe(parseRedisUrl(redis.tlsUrl), timeout=WITHIN)
        self.assertOneLine(caught.exception, redis, "certificate verify failed")

    def test_wrongHostName(self):
        redis = RedisServer(self, tls=True, tlsNames=("redis.example",))
        trust(self, redis.ca.caFile)
        with self.assertRaises(StartupError) as caught:
            probe(parseRedisUrl(redis.tlsUrl), timeout=WITHIN)
        self.assertOneLine(
            caught.exception, redis, "certificate verify failed", "Hostname mismatch", "localhost"
        )

    def test_wrongIpAddress(self):
        redis = RedisServer(self, tls=True, tlsNames=("localhost",))
        trust(self, redis.ca.caFile)
        with self.assertRaises(StartupError) as caught:
            probe(parseRedisUrl(f"rediss://127.0.0.1:{redis.tlsPort}"), timeout=WITHIN)
        self.assertOneLine(caught.exception, redis, "certificate verify failed", "127.0.0.1")

    def test_aCertificateNamingTheHostOnlyInItsCommonNameIsRefused(self):
        """
        The daemon's connections (service_identity) read only a
        certificate's subjectAltName, never its common name: the probe must
        refuse what they would, or the daemon starts and never links.
        """
        redis = RedisServer(self, tls=True, tlsNames=("localhost",), tlsAltNames=False)
        trust(self, redis.ca.caFile)
        with self.assertRaises(StartupError) as caught:
            probe(parseRedisUrl(redis.tlsUrl), timeout=WITHIN)
        self.assertOneLine(caught.exception, redis, "certificate verify failed")


def _directory(testCase: TestCase) -> str:
    path = testCase.mktemp()
    os.makedirs(path)
    return path


class EndpointTests(TestCase):
    """
    The endpoint the daemon's two connections use for C{rediss}: Twisted's
    C{optionsForClientTLS}, trusting C{platformTrust()} (the system's CAs,
    or C{SSL_CERT_FILE}), and checking the host name.
    """

    @inlineCallbacks
    def test_trustedCa(self):
        redis = RedisServer(self, tls=True)
        trust(self, redis.ca.caFile)
        self.assertEqual((yield ping(redis.tlsUrl)), b"+PONG\r\n")

    @inlineCallbacks
    def test_anIpAddress(self):
        redis = RedisServer(self, tls=True)
        trust(self, redis.ca.caFile)
        self.assertEqual((yield ping(f"rediss://127.0.0.1:{redis.tlsPort}")), b"+PONG\r\n")

    @inlineCallbacks
    def test_thePrivateCaIsNotTrustedByTheSystem(self):
        from OpenSSL.SSL import Error

        redis = RedisServer(self, tls=True)
        trust(self, None)
        with self.assertRaises(Error) as caught:
            yield ping(redis.tlsUrl)
        self.assertIn("certificate verify failed", str(caught.exception))

    @inlineCallbacks
    def test_wrongHostName(self):
        from service_identity import VerificationError

        redis = RedisServer(self, tls=True, tlsNames=("redis.example",))
        trust(self, redis.ca.caFile)
        with self.assertRaises(VerificationError):
            yield ping(redis.tlsUrl)

    @inlineCallbacks
    def test_wrongIpAddress(self):
        from service_identity import VerificationError

        redis = RedisServer(self, tls=True, tlsNames=("localhost",))
        trust(self, redis.ca.caFile)
        with self.assertRaises(VerificationError):
            yield ping(f"rediss://127.0.0.1:{redis.tlsPort}")

    @inlineCallbacks
    def test_aCertificateWithoutSubjectAltNameIsRefused(self):
        """
        A certificate from a trusted CA naming another host in its common
        name only is not one for this host. (service_identity raises
        CertificateError for it, not VerificationError.)
        """
        from service_identity import CertificateError, VerificationError

        redis = RedisServer(self, tls=True, tlsNames=("redis.example",), tlsAltNames=False)
        trust(self, redis.ca.caFile)
        try:
            answer = yield ping(redis.tlsUrl)
        except (CertificateError, VerificationError):
            return
        self.fail(f"Redis answered {answer!r} through a certificate for redis.example")


class ClusterTests(TestCase):
    """
    A node over C{rediss} and a node on the same Redis' unix socket are one
    cluster.
    """

    @inlineCallbacks
    def waitUntilUp(self, *daemons: Daemon):
        for _ in range(int(WITHIN / 0.01)):
            if all(d.registry.link.up for d in daemons):
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail(f"the Redis links were not up within {WITHIN} s")

    @inlineCallbacks
    def settled(self, *daemons: Daemon):
        yield gatherResults([d.registry.sync() for d in daemons])
        # Twice: the first beats may come before the others' first.
        for _ in range(2):
            yield gatherResults([d.registry.heartbeat() for d in daemons])

    @inlineCallbacks
    def test_aNodeOverTlsAndANodeOverUnixAreOneCluster(self):
        redis = RedisServer(self, tls=True)
        trust(self, redis.ca.caFile)
        overTls = Daemon(self, "--redis", redis.tlsUrl)
        overUnix = Daemon(self, "--redis", redis.url)
        yield self.waitUntilUp(overTls, overUnix)
        onTls = yield overTls.connect("alice")
        onUnix = yield overUnix.connect("bob")
        yield self.settled(overTls, overUnix)
        self.assertEqual([d.registry.nodes() for d in (overTls, overUnix)], [2, 2])
        code, body, _ = yield overUnix.send([say("to tls", "alice")])
        self.assertEqual((code, len(body["succeeded"])), (200, 1), body)
        code, body, _ = yield overTls.send([say("to unix", "bob")])
        self.assertEqual((code, len(body["succeeded"])), (200, 1), body)
        self.assertEqual((yield onTls.waitFor(1)), ["DATA:to tls"])
        self.assertEqual((yield onUnix.waitFor(1)), ["DATA:to unix"])
