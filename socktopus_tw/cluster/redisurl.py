# -*- test-case-name: tests.cluster.test_redisurl -*-
"""
C{--redis URL}: where the cluster's Redis is, and how to reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from OpenSSL.SSL import VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_PEER, Connection
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from zope.interface import implementer

FORMS = "redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss://... or redis+unix:///PATH[?db=DB]"


@dataclass(frozen=True)
class RedisAddress:
    """
    A parsed C{--redis} URL. C{password} is never part of C{str()}.
    """

    scheme: str
    host: str = ""
    port: int = 6379
    path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0

    def __str__(self) -> str:
        """
        The URL without its password, for logs and errors.
        """
        if self.scheme == "redis+unix":
            where = f"redis+unix://{self.path}"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            where = f"{self.scheme}://{host}:{self.port}"
        return where + (f" (db {self.db})" if self.db else "")

    def endpoint(self, reactor: Any) -> IStreamClientEndpoint:
        """
        A client endpoint for this address; C{rediss} verifies the server's
        certificate and host name against the system's trusted CAs (or
        C{SSL_CERT_FILE}).
        """
        if self.scheme == "redis+unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=2)
        endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=2)
        if self.scheme == "rediss":
            return wrapClientTLS(_ClientTLS(self.host), endpoint)
        return endpoint


@implementer(IOpenSSLClientConnectionCreator)
class _ClientTLS:
    """
    L{optionsForClientTLS}, but a certificate without a subjectAltName is
    refused too. Twisted's verify callback (26.10) catches only
    service_identity's C{VerificationError}; for such a certificate
    service_identity (26.1) raises C{CertificateError}, which Twisted logs
    before accepting the certificate, for any host.
    """

    def __init__(self, host: str) -> None:
        self._options = optionsForClientTLS(host)
        ip = isIPAddress(host) or isIPv6Address(host)
        self._identity = IPAddress_ID(host) if ip else DNS_ID(host)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        identity = self._identity

        def verify(conn: Connection, cert: Any, err: int, depth: int, ok: int) -> bool:
            # Only the server's own certificate names it; OpenSSL checked the chain.
            if depth != 0 or not ok:
                return bool(ok)
            try:
                verify_service_identity(extract_patterns(cert), [identity], [])
            except (VerificationError, CertificateError):
                tlsProtocol.failVerification(Failure())
                return False
            return True

        # Replaces the callback Twisted set, with the same check made strict.
        connection.set_verify(VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


def parseRedisUrl(text: str) -> RedisAddress:
    """
    Parse a C{--redis} URL, or raise L{ValueError} saying what is wrong
    (without repeating a password).
    """
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "redis+unix"):
        raise ValueError(f"expected {FORMS}")
    try:
        query = parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"cannot read the query string; expected {FORMS}") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if scheme == "redis+unix":
        if (parts.netloc and parts.netloc.rpartition("@")[2]) or not parts.path:
            raise ValueError("a redis+unix URL is redis+unix:///absolute/path/redis.sock")
        db = _db(query.get("db", ["0"])[-1])
        return RedisAddress(
            scheme, path=unquote(parts.path), username=username, password=password, db=db
        )
    if not parts.hostname:
        raise ValueError(f"the URL names no host; expected {FORMS}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    path = parts.path.strip("/")
    db = _db(path or query.get("db", ["0"])[-1])
    return RedisAddress(
        scheme, host=parts.hostname, port=port, username=username, password=password, db=db
    )


def _db(text: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise ValueError(f"the database must be a number, such as /0; expected {FORMS}")
    return int(text)
