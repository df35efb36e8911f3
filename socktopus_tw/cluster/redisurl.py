# -*- test-case-name: tests.cluster.test_redisurl -*-
"""
C{--redis URL}: where the cluster's Redis is, and how to reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS

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
            return wrapClientTLS(optionsForClientTLS(self.host), endpoint)
        return endpoint


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
