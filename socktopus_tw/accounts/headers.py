# -*- test-case-name: tests.accounts.test_headers -*-
"""
Auth Headers (SPEC §4.1): a request signed with the session secret.

Pure: parsing, signing and the replay guard take the time as an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from socktopus_tw.errors import NotAuthorized

_HEX = re.compile(r"[0-9a-fA-F]+")

#: Seconds a Time-Sent may differ from the server's clock, either way.
WINDOW = 10


def sign(secret: str, timeSent: str, path: str, encoding: str = "hex") -> str:
    """
    The C{HMAC} header: HMAC-SHA256 of C{"<Time-Sent>:<Path>"}, keyed with the
    session secret as its base64 text.
    """
    mac = hmac.digest(secret.encode("ascii"), f"{timeSent}:{path}".encode(), hashlib.sha256)
    if encoding == "base64":
        return base64.b64encode(mac).decode("ascii")
    return mac.hex()


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """
    The Auth Headers of one request, well-formed but not yet verified.
    """

    userId: int
    path: str
    timeSent: str
    mac: bytes

    @classmethod
    def fromHeaders(cls, header: Callable[[bytes], bytes | None]) -> SignedRequest:
        """
        Read the headers through C{header(name)}; anything missing or
        malformed is L{NotAuthorized}, with no hint of which.
        """
        raw = {name: header(name) for name in (b"userid", b"path", b"time-sent", b"hmac")}
        if any(value is None for value in raw.values()):
            raise NotAuthorized()
        try:
            userId = raw[b"userid"].decode("ascii")
            path = raw[b"path"].decode("utf-8")
            timeSent = raw[b"time-sent"].decode("ascii")
            encoding = (header(b"encoding") or b"hex").decode("ascii").lower()
            text = raw[b"hmac"].decode("ascii")
            # Ids are signed 64-bit in the database; 19 digits bound int().
            if not (userId.isdigit() and timeSent.isdigit()) or len(timeSent) > 12:
                raise ValueError()
            if len(userId) > 19 or int(userId) >= 2**63:
                raise ValueError()
            if encoding == "hex":
                if not _HEX.fullmatch(text):
                    raise ValueError()
                mac = bytes.fromhex(text)
            elif encoding == "base64":
                mac = base64.b64decode(text, validate=True)
            else:
                raise ValueError()
        except (UnicodeDecodeError, ValueError, binascii.Error):
            raise NotAuthorized() from None
        if len(mac) != hashlib.sha256().digest_size or not path:
            raise NotAuthorized()
        return cls(int(userId), path, timeSent, mac)

    def checkTime(self, now: float) -> None:
        if abs(int(self.timeSent) - now) > WINDOW:
            raise NotAuthorized()

    def checkSignature(self, secret: str) -> None:
        expected = hmac.digest(
            secret.encode("ascii"), f"{self.timeSent}:{self.path}".encode(), hashlib.sha256
        )
        if not hmac.compare_digest(expected, self.mac):
            raise NotAuthorized()


class ReplayGuard:
    """
    Remembers signed requests long enough that none is accepted twice: an
    entry can be forgotten once its Time-Sent is out of the window anyway.

    This is one process's memory: the accounts service also records each set
    of headers in the database (L{socktopus_tw.accounts.store.acceptHeaders}),
    which a restarted daemon and every daemon on that database share; this
    guard only refuses a replay to the same process without a query.
    """

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[int, str, bytes], float] = OrderedDict()

    def accept(self, signed: SignedRequest, now: float) -> None:
        """
        Record C{signed}, or raise L{NotAuthorized} if it was seen before.
        """
        self._forget(now)
        key = (signed.userId, signed.timeSent, signed.mac)
        if key in self._seen:
            raise NotAuthorized()
        self._seen[key] = int(signed.timeSent) + WINDOW

    def release(self, signed: SignedRequest) -> None:
        """
        Forget C{signed}: it was not used after all (the database did not
        answer), so the client may send the same headers again.
        """
        self._seen.pop((signed.userId, signed.timeSent, signed.mac), None)

    def _forget(self, now: float) -> None:
        # Entries are added roughly in Time-Sent order; the oldest sit first.
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until >= now:
                break
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)
