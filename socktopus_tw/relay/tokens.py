# -*- test-case-name: tests.relay.test_tokens -*-
"""
Relay client tokens (SPEC §3.1): pure functions, no clock and no I/O.

A token is four lower-case hex fields joined by ``h``::

    hex(T) h hex(APP) h hex(CONNECTION_ID) h hex(HMAC_SHA256(SECRET, T + CONNECTION_ID))

where ``T`` is Unix time in milliseconds written as decimal ASCII.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from socktopus_tw.errors import RelayError

MAX_CONNECTION_ID_BYTES = 256


class MalformedToken(RelayError):
    status = 400
    message = "Malformed token"


class ExpiredToken(RelayError):
    status = 401
    message = "Token expired"


class InvalidSignature(RelayError):
    status = 401
    message = "Invalid signature"


def sign(secret: str, stamp: str, connectionId: str) -> bytes:
    """
    The raw HMAC-SHA256 of a token: key is the secret, message is the decimal
    millisecond stamp followed by the connection id, all UTF-8.
    """
    return hmac.digest(
        secret.encode("utf-8"), (stamp + connectionId).encode("utf-8"), hashlib.sha256
    )


def makeToken(app: str, secret: str, connectionId: str, nowMilliseconds: int) -> str:
    """
    Build the token a backend hands to its client.
    """
    stamp = str(int(nowMilliseconds))
    return "h".join(
        [
            stamp.encode("ascii").hex(),
            app.encode("utf-8").hex(),
            connectionId.encode("utf-8").hex(),
            sign(secret, stamp, connectionId).hex(),
        ]
    )


@dataclass(frozen=True, slots=True)
class Token:
    """
    A token whose shape is right; neither its age nor its signature is checked yet.
    """

    stamp: str
    app: str
    connectionId: str
    signature: bytes

    @property
    def milliseconds(self) -> int:
        return int(self.stamp)

    def checkAge(self, nowMilliseconds: float, lifespanMilliseconds: float) -> None:
        """
        Refuse a token older than the lifespan, or stamped more than the same
        margin in the future (the Go original accepted those forever).
        """
        if abs(nowMilliseconds - self.milliseconds) > lifespanMilliseconds:
            raise ExpiredToken()

    def checkSignature(self, secret: str) -> None:
        """
        Constant-time comparison, so the signature cannot be guessed byte by byte.
        """
        expected = sign(secret, self.stamp, self.connectionId)
        if not hmac.compare_digest(expected, self.signature):
            raise InvalidSignature()


def _unhex(field: str) -> bytes:
    # bytes.fromhex accepts upper case and embedded spaces; the wire format is
    # strictly lower-case hex, so anything else is malformed.
    if not field or len(field) % 2 or field.strip("0123456789abcdef"):
        raise MalformedToken()
    return bytes.fromhex(field)


def parseToken(token: str) -> Token:
    """
    Split and decode a token, raising L{MalformedToken} for anything that is
    not four hex fields with a decimal stamp and UTF-8 names.
    """
    fields = token.split("h")
    if len(fields) != 4:
        raise MalformedToken()
    rawStamp, rawApp, rawConnectionId, signature = map(_unhex, fields)
    if not rawStamp.isdigit() or len(rawStamp) > 20:
        raise MalformedToken()
    if len(rawConnectionId) > MAX_CONNECTION_ID_BYTES:
        raise MalformedToken()
    try:
        app = rawApp.decode("utf-8")
        connectionId = rawConnectionId.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedToken() from None
    return Token(rawStamp.decode("ascii"), app, connectionId, signature)
