"""
TLS straight from the daemon: --listen ssl:... serves https:// and wss://
with pyOpenSSL, and clients that verify the certificate connect.
"""

from __future__ import annotations

import json

import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseNeverReceived

from tests.support.accounts import CertificateAuthority, _endpointQuote, writeFile
from tests.support.daemon import APP, SECRET, Daemon, RelayClient


class TLSTests(TestCase):
    timeout = 60

    def setUp(self):
        self.authority = CertificateAuthority("Socktopus test CA")
        keyPem, certPem = self.authority.issue("localhost")
        key = writeFile(self, ".key.pem", keyPem)
        cert = writeFile(self, ".cert.pem", certPem)
        self.daemon = Daemon(
            self,
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey="
            f"{_endpointQuote(key)}:certKey={_endpointQuote(cert)}",
        )
        listener = next(s for s in self.daemon.service if s.name.startswith("listen 1 ssl:"))
        self.port = listener.port.getHost().port
        self.trust = Certificate.loadPEM(self.authority.pem())

    def agent(self, trust: Certificate) -> Agent:
        return Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust))

    @inlineCallbacks
    def test_httpsAndWssWithAVerifiedCertificate(self):
        """
        A deployment without nginx terminates TLS itself: a verifying client
        connects over wss://, and a message sent over https:// reaches it.
        """
        token = self.daemon.token("secure")
        factory = WebSocketClientFactory(f"wss://localhost:{self.port}/recieve?token={token}")
        factory.protocol = RelayClient
        endpoint = SSL4ClientEndpoint(
            reactor, "127.0.0.1", self.port, optionsForClientTLS("localhost", trustRoot=self.trust)
        )
        client = yield endpoint.connect(factory)
        self.daemon.clients.append(client)
        yield client.opened

        body = json.dumps(
            {
                "secretName": APP,
                "secret": SECRET,
                "messages": [{"recipient": "secure", "content": "over TLS"}],
            }
        )
        response = yield treq.post(
            f"https://localhost:{self.port}/send", data=body.encode(), agent=self.agent(self.trust)
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(len((yield response.json())["succeeded"]), 1)
        self.assertEqual((yield client.waitFor(1)), ["DATA:over TLS"])
        client.sendText("PING")
        self.assertEqual((yield client.waitFor(2))[1], "PONG")

        # The kick and its CLOSE travel over TLS as well.
        kick = json.dumps({"secretName": APP, "secret": SECRET, "connections": ["secure"]})
        response = yield treq.post(
            f"https://localhost:{self.port}/kick", data=kick.encode(), agent=self.agent(self.trust)
        )
        self.assertEqual((yield response.json())["kicked"], ["secure"])
        yield client.closed
        self.assertEqual(client.received[-1], "CLOSE")

    @inlineCallbacks
    def test_untrustedCertificateIsRefusedByVerifyingClients(self):
        """
        The test's client really verifies: a certificate from another CA fails.
        """
        other = Certificate.loadPEM(CertificateAuthority("Someone else").pem())
        with self.assertRaises(ResponseNeverReceived):
            yield treq.get(f"https://localhost:{self.port}/health", agent=self.agent(other))
        response = yield treq.get(
            f"https://localhost:{self.port}/health", agent=self.agent(self.trust)
        )
        self.assertEqual((yield response.json()), {"status": "ok"})
