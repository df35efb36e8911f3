"""
Helpers for the accounts end-to-end tests: Auth Headers computed here from the
SPEC (not with the daemon's own code), a register-and-login shortcut, a local
SMTP server built from Twisted's own ESMTP server, and a local HTTPS server
standing in for reCAPTCHA's verifier, with certificates made in the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as defaultPolicy
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.endpoints import serverFromString
from twisted.mail import smtp
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

#: A password every helper-made user has unless told otherwise.
PASSWORD = "correct horse battery"


# -- Auth Headers ------------------------------------------------------------


def signedHeaders(
    userId: int | str, secret: str, path: str, now: float | None = None, encoding: str = "hex"
) -> dict[str, str]:
    """
    The Auth Headers of SPEC §4.1: HMAC-SHA256 of C{"<Time-Sent>:<Path>"},
    keyed with the session secret as its base64 text.
    """
    timeSent = str(int(time.time() if now is None else now))
    mac = hmac.new(secret.encode("ascii"), f"{timeSent}:{path}".encode(), hashlib.sha256)
    written = (
        base64.b64encode(mac.digest()).decode("ascii") if encoding == "base64" else mac.hexdigest()
    )
    return {
        "UserID": str(userId),
        "Path": path,
        "Time-Sent": timeSent,
        "HMAC": written,
        "Encoding": encoding,
    }


def basicAuthorization(name: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{name}:{password}".encode()).decode("ascii")
    return {"Authorization": "Basic " + encoded}


@inlineCallbacks
def register(
    daemon: Any, name: str, password: str = PASSWORD, email: str | None = None, **extra: Any
):
    """
    C{POST /users}; fires with the new user's id, failing the test on any
    other answer.
    """
    body = {"User": name, "Password": password, "Email": email or f"{name}@example.com"}
    body.update(extra)
    status, answer, _ = yield daemon.post("/users", body)
    if status != 200:
        raise AssertionError(f"registering {name!r}: {status} {answer!r}")
    return answer["UserID"]


@inlineCallbacks
def login(daemon: Any, name: str, password: str = PASSWORD, stayLoggedIn: Any = None):
    """
    C{POST /login}; fires with the answer, failing the test unless it is a 200.
    """
    body: dict[str, Any] = {"User": name, "Password": password}
    if stayLoggedIn is not None:
        body["StayLoggedIn"] = stayLoggedIn
    status, answer, _ = yield daemon.post("/login", body)
    if status != 200:
        raise AssertionError(f"logging in {name!r}: {status} {answer!r}")
    return answer


@inlineCallbacks
def registerAndLogin(daemon: Any, name: str, password: str = PASSWORD, **extra: Any):
    """
    A new user, logged in: fires with C{(userId, secret)}.
    """
    userId = yield register(daemon, name, password, **extra)
    answer = yield login(daemon, name, password)
    return userId, answer["Secret"]


def parseExpiration(text: str) -> float:
    """
    The Unix time of an RFC 3339 UTC timestamp such as C{2016-08-27T06:45:42Z}.
    """
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def closedPort() -> int:
    """
    A port of 127.0.0.1 that nobody listens on (it was free a moment ago).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- tracking servers --------------------------------------------------------


class TrackedProtocol(ProtocolWrapper):
    """
    A server connection whose end the test can wait for.
    """

    def __init__(self, factory: WrappingFactory, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


class TrackingFactory(WrappingFactory):
    """
    Remembers its live connections so a test can close them all before the
    reactor is checked for leftovers.
    """

    protocol = TrackedProtocol

    def closeAll(self) -> Deferred[Any]:
        waiting = []
        for connection in list(self.protocols):
            waiting.append(connection.lost)
            connection.transport.abortConnection()
        return gatherResults(waiting) if waiting else succeed(None)


@inlineCallbacks
def listen(testCase: TestCase, description: str, factory: Any):
    """
    Serve C{factory}, tracked, on an endpoint; closes it and every connection
    at cleanup. Fires with C{(port number, tracking factory)}.
    """
    tracking = TrackingFactory(factory)
    port = yield serverFromString(reactor, description).listen(tracking)

    @inlineCallbacks
    def close():
        yield port.stopListening()
        yield tracking.closeAll()

    testCase.addCleanup(close)
    return port.getHost().port, tracking


# -- SMTP --------------------------------------------------------------------


class ReceivedMail:
    """
    One message as the SMTP server received it.
    """

    def __init__(self, sender: str, recipient: str, data: bytes) -> None:
        self.sender = sender
        self.recipient = recipient
        self.data = data

    def text(self) -> str:
        """
        The plain-text body, decoded as a mail reader would.
        """
        message = message_from_bytes(self.data, policy=defaultPolicy)
        return message.get_body(("plain",)).get_content()

    def header(self, name: str) -> str | None:
        return message_from_bytes(self.data, policy=defaultPolicy)[name]


@implementer(smtp.IMessage)
class StoredMessage:
    def __init__(self, server: MailServer, sender: str, recipient: str) -> None:
        self.server = server
        self.sender = sender
        self.recipient = recipient
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        self.server.received(
            ReceivedMail(self.sender, self.recipient, b"\n".join(self.lines) + b"\n")
        )
        return succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class StoringDelivery:
    def __init__(self, server: MailServer) -> None:
        self.server = server
        self.sender = ""

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
        return None

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        self.sender = str(origin)
        return origin

    def validateTo(self, user: Any) -> Any:
        sender, recipient = self.sender, str(user.dest)
        return lambda: StoredMessage(self.server, sender, recipient)


class MailFactory(smtp.SMTPFactory):
    protocol = smtp.ESMTP

    def __init__(self, server: MailServer) -> None:
        super().__init__()
        self.server = server

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.delivery = StoringDelivery(self.server)
        return protocol


class MailServer:
    """
    A local ESMTP server (Twisted's own) that keeps every message it gets.
    """

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self._waiting: list[tuple[int, Deferred[ReceivedMail]]] = []
        self.port = 0

    @classmethod
    @inlineCallbacks
    def start(cls, testCase: TestCase, port: int = 0):
        """
        Listen on 127.0.0.1 (a free port unless told which); fires with the server.
        """
        server = cls()
        server.port, _ = yield listen(
            testCase, f"tcp:{port}:interface=127.0.0.1", MailFactory(server)
        )
        return server

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def received(self, mail: ReceivedMail) -> None:
        self.messages.append(mail)
        ready = [(n, d) for n, d in self._waiting if len(self.messages) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(self.messages) < n]
        for n, d in ready:
            d.callback(self.messages[n - 1])

    def waitFor(self, count: int) -> Deferred[ReceivedMail]:
        """
        Fire with the C{count}th message once it has arrived.
        """
        if len(self.messages) >= count:
            return succeed(self.messages[count - 1])
        d: Deferred[ReceivedMail] = Deferred()
        self._waiting.append((count, d))
        return d


# -- TLS and the reCAPTCHA stand-in -------------------------------------------


def _name(commonName: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


class CertificateAuthority:
    """
    A CA made for one test, able to issue server certificates.
    """

    def __init__(self, commonName: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName))
            .issuer_name(_name(commonName))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, hostname: str = "localhost", address: str = "127.0.0.1"):
        """
        A server key and certificate for C{hostname} and C{address}: C{(keyPEM, certPEM)}.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(hostname))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(address))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        keyPem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return keyPem, certificate.public_bytes(serialization.Encoding.PEM)


def writeFile(testCase: TestCase, suffix: str, data: bytes) -> str:
    path = os.path.abspath(testCase.mktemp() + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _endpointQuote(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


class SiteVerify(Resource):
    """
    C{POST /siteverify}: reCAPTCHA's verifier, reduced to one rule: the
    answer C{good} with the expected secret passes, anything else fails.
    """

    isLeaf = True

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.forms: list[dict[str, str]] = []

    def render_POST(self, request: Any) -> bytes:
        form = {k.decode(): v[0].decode() for k, v in request.args.items()}
        self.forms.append(form)
        success = form.get("secret") == self.secret and form.get("response") == "good"
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"success": success}).encode()


class RecaptchaServer:
    """
    A local HTTPS server standing in for reCAPTCHA, with a certificate
    issued by C{authority} for localhost and 127.0.0.1.
    """

    def __init__(self, secret: str) -> None:
        self.verifier = SiteVerify(secret)
        self.port = 0

    @classmethod
    @inlineCallbacks
    def start(cls, testCase: TestCase, authority: CertificateAuthority, secret: str):
        server = cls(secret)
        keyPem, certPem = authority.issue()
        keyPath = writeFile(testCase, ".key.pem", keyPem)
        certPath = writeFile(testCase, ".cert.pem", certPem)
        root = Resource()
        root.putChild(b"siteverify", server.verifier)
        site = Site(root)
        site.noisy = False
        description = (
            f"ssl:0:interface=127.0.0.1:privateKey={_endpointQuote(keyPath)}"
            f":certKey={_endpointQuote(certPath)}"
        )
        server.port, _ = yield listen(testCase, description, site)
        return server

    @property
    def forms(self) -> list[dict[str, str]]:
        return self.verifier.forms

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/siteverify"
