# -*- test-case-name: tests.e2e.test_client,tests.e2e.test_client_accounts_hardened,tests.e2e.test_client_events,tests.test_cli_listen -*-  # noqa: E501
"""
A Python client for Socktopus, for backends written with Twisted.

Relay tokens and Auth Headers are computed by the daemon's own code, so the
client and the daemon cannot disagree about them. Every network call returns
a L{Deferred}; from C{async def} code, C{await} it::

    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react

    from socktopus_tw.client import RelayClient

    async def main(reactor):
        relay = RelayClient("http://localhost:8080", "demo", "change-me")
        token = relay.token("user-42")   # give it to the client; it connects to
                                         # ws://localhost:8080/recieve?token=...
        result = await relay.send({"user-42": "hello"})
        print(result.succeeded, result.failed)
        await relay.close()

    react(lambda reactor: ensureDeferred(main(reactor)))

L{connect} is the other side: a client's WebSocket to the relay, kept open
with a fresh token after each drop (the C{socktopus listen} command is one).
L{verify_webhook} checks the signature of the events the daemon posts to an
app's webhook (SPEC §7.2).

Errors: a 4xx or 5xx answer fails the Deferred with a L{SocktopusError}
(L{BadRequest}, L{Unauthorized}, L{NotFound}, L{Conflict}, L{TooLarge},
L{TooManyAttempts} with its C{retry_after}, L{Unavailable}, or
L{SocktopusError} itself for any other status). A failure
below HTTP is Twisted's own error, unwrapped: a daemon that is not listening
is L{twisted.internet.error.ConnectionRefusedError} (a L{ConnectError}), a
name that does not resolve L{twisted.internet.error.DNSLookupError}, a
connection cut mid-request L{twisted.web.client.ResponseNeverReceived} or
L{twisted.web.client.ResponseFailed}.

There is deliberately no blocking wrapper: Twisted's reactor cannot be
restarted, so a thin "call and wait" function could only work once per
process. A script runs its calls in one C{async def main(reactor)} under
L{twisted.internet.task.react}, as above.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import operator
import random
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent

from socktopus_tw.accounts.headers import sign
from socktopus_tw.relay.tokens import MAX_CONNECTION_ID_BYTES, makeToken

__all__ = [
    "AccountEvent",
    "AccountsClient",
    "BadRequest",
    "Closed",
    "Conflict",
    "KickResult",
    "NotFound",
    "PresenceResult",
    "Reconnecting",
    "RelayClient",
    "RelayConnection",
    "RelayToken",
    "SendResult",
    "Session",
    "SocktopusError",
    "TooLarge",
    "TooManyAttempts",
    "Unauthorized",
    "Unavailable",
    "auth_headers",
    "connect",
    "make_token",
    "receive_url",
    "verify_webhook",
]

_log = Logger()

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The Auth Headers (SPEC 4.1), as the daemon spells them.
AUTH_HEADER_NAMES = ("UserID", "Path", "Time-Sent", "HMAC", "Encoding")


# -- tokens and headers (pure) -------------------------------------------------


def make_token(app: str, secret: str, connection_id: str, now: float | None = None) -> str:
    """
    A relay token for C{connection_id}, stamped C{now} (Unix time in seconds,
    default the current time). The client connects with it to
    C{/recieve?token=...} within the daemon's token lifespan (5 s by default).

    @raise ValueError: C{connection_id} is empty or over 256 UTF-8 bytes,
        which the daemon would refuse.
    """
    size = len(connection_id.encode("utf-8"))
    if not 1 <= size <= MAX_CONNECTION_ID_BYTES:
        raise ValueError(
            f"connection id must be 1 to {MAX_CONNECTION_ID_BYTES} UTF-8 bytes, not {size}"
        )
    seconds = time.time() if now is None else now
    # round(), not int(): now=ms/1000 must give back exactly ms, so that a
    # token made here from another SDK's millisecond time is the same token.
    return makeToken(app, secret, connection_id, round(seconds * 1000))


def auth_headers(
    user_id: int, secret: str, path: str, now: float | None = None, encoding: str = "hex"
) -> dict[str, str]:
    """
    The Auth Headers signing a request to C{path} (the path the daemon sees,
    query string included) with a session secret; C{now} is Unix time in
    seconds, default the current time. C{encoding} is C{"hex"} or C{"base64"}.
    """
    if encoding not in ("hex", "base64"):
        raise ValueError(f"encoding must be 'hex' or 'base64', not {encoding!r}")
    timeSent = str(int(time.time() if now is None else now))
    return {
        "UserID": str(int(user_id)),
        "Path": path,
        "Time-Sent": timeSent,
        "HMAC": sign(secret, timeSent, path, encoding),
        "Encoding": encoding,
    }


#: How far a webhook's signed time may be from now, either way, in seconds.
WEBHOOK_TOLERANCE = 300.0

#: A webhook signature's time: decimal milliseconds (15 digits reach the year 33658).
_WEBHOOK_TIME = re.compile(r"[0-9]{1,15}")
#: A hex HMAC-SHA256.
_WEBHOOK_MAC = re.compile(r"[0-9a-fA-F]{64}")


def verify_webhook(
    body: bytes, header: str | bytes | list[Any] | None, secret: str, now: float | None = None
) -> bool:
    """
    Whether a webhook request is the daemon's (SPEC §7.2): C{header}, its
    C{Socktopus-Signature} (C{t=<ms>,v1=<hex>}), signs C{body}, the raw
    bytes as they came, with the app's C{secret}, at a time within 5
    minutes of C{now} (Unix time in seconds, default the current time).

    A missing or malformed header, a wrong signature, or a time too old (a
    replay) or too far ahead is C{False}, never an exception. The header
    may be given as a web framework hands it over: C{str}, C{bytes}, or a
    list of either (Twisted's C{getRawHeaders()}). Parts other than C{t}
    and C{v1} are ignored, and any C{v1} that matches will do.

    @raise TypeError: C{body} is not bytes (a decoded or re-encoded body
        would not be what was signed).
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be the request's raw bytes")
    if header is None:
        return False
    stamp = None
    macs = []
    for part in _headerValue(header).split(","):
        # Optional whitespace as HTTP has it (spaces, tabs), nothing more.
        name, equals, value = part.strip(" \t").partition("=")
        if not equals:
            return False
        if name == "t":
            if stamp is not None or not _WEBHOOK_TIME.fullmatch(value):
                return False
            stamp = value
        elif name == "v1" and _WEBHOOK_MAC.fullmatch(value):
            macs.append(bytes.fromhex(value))
    if stamp is None or not macs:
        return False
    seconds = time.time() if now is None else now
    if abs(seconds - int(stamp) / 1000) > WEBHOOK_TOLERANCE:
        return False
    expected = hmac.new(
        secret.encode("utf-8"), stamp.encode("ascii") + b"." + bytes(body), hashlib.sha256
    ).digest()
    # Constant time, and every v1 compared: how long this takes says nothing
    # about how much of a forged signature was right.
    matched = False
    for mac in macs:
        matched |= hmac.compare_digest(mac, expected)
    return matched


# -- errors --------------------------------------------------------------------


class SocktopusError(Exception):
    """
    The daemon answered with an error status. C{status} is the HTTP status and
    C{message} the daemon's message (from C{{"code", "message"}} or
    C{{"Error"}}), or the start of the body when it is not the daemon's JSON
    (a proxy's error page). Raised as is for statuses without a subclass.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


class BadRequest(SocktopusError):
    """
    400: the request was malformed, or a value was refused (a short password...).
    """


class Unauthorized(SocktopusError):
    """
    401: wrong app secret, wrong user or password, or Auth Headers refused.
    """


class NotFound(SocktopusError):
    """
    404: unknown app ("Secret not found"), user or path.
    """


class Conflict(SocktopusError):
    """
    409: the user name is taken.
    """


class TooLarge(SocktopusError):
    """
    413: the request body is over the daemon's C{--max-body-size}.
    """


class TooManyAttempts(SocktopusError):
    """
    429: too many wrong passwords for this user from this IP, or from this IP
    for any users (SPEC §8.1). C{retry_after} is how many seconds to wait
    before the next attempt can succeed, from the C{Retry-After} header, or
    C{None} when the answer had none (a proxy's own 429, say).
    """

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after


class Unavailable(SocktopusError):
    """
    503: something the daemon needs (database, mail, reCAPTCHA) is down; try again.
    """


_ERRORS: dict[int, type[SocktopusError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    429: TooManyAttempts,
    503: Unavailable,
}


def _retryAfter(value: str | bytes | None) -> int | None:
    """
    The seconds a C{Retry-After} header says: the daemon writes seconds; an
    HTTP date (RFC 9110, which proxies may send) is counted from now.
    """
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, math.ceil(when.timestamp() - time.time()))


def _error(
    status: int, phrase: bytes, body: bytes, retry_after: str | bytes | None = None
) -> SocktopusError:
    message = None
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        for name in ("message", "Error"):
            if isinstance(decoded.get(name), str):
                message = decoded[name]
                break
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = text[:200] or phrase.decode("latin-1")
    if status == 429:
        return TooManyAttempts(status, message, _retryAfter(retry_after))
    return _ERRORS.get(status, SocktopusError)(status, message)


# -- results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    """
    The answer to L{RelayClient.send}: each message (a C{{"recipient",
    "content"}} dict) in C{succeeded} or in C{failed} (not connected, too
    large, or its client cut off), in the order sent.
    """

    succeeded: list[dict[str, str]]
    failed: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class KickResult:
    """
    The answer to L{RelayClient.kick}: the ids that were connected and are
    now closed, and those that were not connected.
    """

    kicked: list[str]
    not_connected: list[str]


@dataclass(frozen=True, slots=True)
class PresenceResult:
    """
    The answer to L{RelayClient.presence}. Asked about ids: those connected
    and those not, each in the order asked (an id asked twice is listed
    twice). Asked about everyone: every connected id of the app, and no
    C{not_connected}. C{count} is how many ids C{connected} lists.
    """

    connected: list[str]
    not_connected: list[str]
    count: int


@dataclass(frozen=True, slots=True)
class Session:
    """
    A logged-in user: the session C{secret} that signs requests, the user's
    id, and when the secret expires unless used (an aware UTC datetime).
    The secret is left out of C{repr()}, so logging a session leaks nothing.
    """

    secret: str = field(repr=False)
    user_id: int
    expiration: datetime

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Session:
        """
        A session from the daemon's C{{"Secret", "UserID", "Expiration"}}.
        """
        expiration = datetime.fromisoformat(answer["Expiration"])
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=UTC)
        return cls(answer["Secret"], int(answer["UserID"]), expiration)


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """
    One entry of a user's audit log (SPEC §8.3): C{type} (C{"login"},
    C{"loginFailed"}, C{"throttled"}, C{"passwordReset"}...), C{time} (an
    aware UTC datetime) and the client C{ip} it came from (empty when the
    daemon did not know it).
    """

    type: str
    time: datetime
    ip: str

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> AccountEvent:
        """
        An event from the daemon's C{{"Type", "Time", "IP"}}.
        """
        return cls(answer["Type"], _utc(answer["Time"]), answer["IP"])


@dataclass(frozen=True, slots=True)
class RelayToken:
    """
    A relay token the accounts service made for a signed-in user (SPEC
    §8.4), and the C{connection_id} it connects as (C{"user:<id>"}, where
    the app's backend sends to). Like any token it is good for the daemon's
    token lifespan (5 s by default): ask for one per connection. It is left
    out of C{repr()}, as a session's secret is.
    """

    token: str = field(repr=False)
    connection_id: str


def _utc(text: str) -> datetime:
    # fromisoformat reads the daemon's "...Z" (Python 3.11+); a time
    # without a zone is the daemon's UTC too.
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


# -- HTTP ----------------------------------------------------------------------


def _returnsDeferred(
    f: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Deferred[_R]]:
    # Coroutines inside, Deferreds outside: callers need not use async def.
    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_R]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _wirePath(path: str) -> str:
    """
    C{path} exactly as it will be sent: treq percent-encodes what needs it
    (spaces, non-ASCII) and drops a fragment, and the daemon compares the
    signed Path with what it receives, so the signature must cover this form.
    """
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"path must start with a single '/': {path!r}")
    return EncodedURL.from_text(path).to_uri().replace(fragment="").to_text()


class _Client:
    """
    What both clients share: the base URL, the agent, JSON in and out.
    """

    def __init__(self, base_url: str, agent: IAgent | None, reactor: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            if reactor is None:
                # Imported here so that importing this module installs no reactor.
                from twisted.internet import reactor
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            agent = Agent(reactor, pool=self._pool)
        self._http = HTTPClient(agent)

    def close(self) -> Deferred[None]:
        """
        Close the idle connections this client keeps open (when it made its
        own agent; an agent passed in is left to its owner).
        """
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        """
        Send a request to C{path} below the base URL; C{body}, if any, as JSON.
        Fires with the decoded JSON answer, or fails with a L{SocktopusError}.
        """
        sent = dict(headers or {})
        if body is not None:
            kw["data"] = _encode(body)
            sent.setdefault("Content-Type", "application/json")
        # An API does not redirect; following one would resend the body and
        # headers somewhere else. A 3xx is reported as an error instead.
        kw.setdefault("allow_redirects", False)
        response = await self._http.request(
            method, self.base_url + _wirePath(path), headers=sent, **kw
        )
        content = await response.content()
        if not 200 <= response.code < 300:
            retryAfter = response.headers.getRawHeaders(b"retry-after")
            raise _error(
                response.code, response.phrase, content, retryAfter[0] if retryAfter else None
            )
        try:
            return json.loads(content)
        except ValueError:
            raise SocktopusError(response.code, "The answer is not JSON") from None


class RelayClient(_Client):
    """
    The relay's backend API for one app: tokens, C{POST /send}, C{POST /kick},
    C{POST /presence}.

    @param base_url: the daemon, e.g. C{"http://localhost:8080"}, or the
        prefix a proxy serves the relay under.
    @param agent: an L{IAgent} to send requests with; by default the client
        makes one with a persistent connection pool (see L{close}).
    @param reactor: the reactor for that default agent; the global one if absent.
    """

    def __init__(
        self,
        base_url: str,
        app: str,
        secret: str,
        *,
        agent: IAgent | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__(base_url, agent, reactor)
        self.app = app
        self._secret = secret

    def __repr__(self) -> str:
        return f"RelayClient({self.base_url!r}, {self.app!r})"

    def token(self, connection_id: str, now: float | None = None) -> str:
        """
        A token for C{connection_id} of this app; see L{make_token}.
        """
        return make_token(self.app, self._secret, connection_id, now)

    @_returnsDeferred
    async def send(self, messages: Iterable[Mapping[str, str]] | Mapping[str, str]) -> SendResult:
        """
        Deliver messages, in order: a list of C{{"recipient": id, "content":
        text}} dicts, or a mapping C{{id: text}} as a shortcut (one message per
        recipient). Fires with a L{SendResult}; a recipient that is not
        connected is in C{failed}, not an error.
        """
        if isinstance(messages, Mapping):
            batch = [{"recipient": r, "content": c} for r, c in messages.items()]
        else:
            batch = [dict(message) for message in messages]
        answer = await self._request(
            "POST", "/send", {"secretName": self.app, "secret": self._secret, "messages": batch}
        )
        return SendResult(answer["succeeded"], answer["failed"])

    @_returnsDeferred
    async def kick(self, ids: Iterable[str] | str) -> KickResult:
        """
        Close these connections (each receives C{CLOSE}) and refuse their
        tokens stamped until now. A single id may be given as a string.
        Fires with a L{KickResult}.
        """
        connections = [ids] if isinstance(ids, str) else list(ids)
        answer = await self._request(
            "POST",
            "/kick",
            {"secretName": self.app, "secret": self._secret, "connections": connections},
        )
        return KickResult(answer["kicked"], answer["notConnected"])

    @_returnsDeferred
    async def presence(self, connection_ids: Iterable[str] | str | None = None) -> PresenceResult:
        """
        Which of these connections are connected now (a single id may be
        given as a string); without ids, every connected id of the app.
        Across the cluster, with C{--redis}. Fires with a L{PresenceResult}.
        """
        body: dict[str, Any] = {"secretName": self.app, "secret": self._secret}
        if connection_ids is not None:
            body["connections"] = (
                [connection_ids] if isinstance(connection_ids, str) else list(connection_ids)
            )
        answer = await self._request("POST", "/presence", body)
        connected = answer["connected"]
        return PresenceResult(
            connected, answer.get("notConnected", []), answer.get("count", len(connected))
        )


def _headerValue(value: Any) -> str:
    # Accept what web frameworks hand over: str, bytes, or a list of either
    # (Twisted's getAllRawHeaders()).
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


class AccountsClient(_Client):
    """
    The accounts API: register, log in, sign requests with a L{Session};
    reset a password by mail, read the audit log, get relay tokens for a
    signed-in user (SPEC §8).

    @param base_url: the daemon, or the prefix a proxy serves the accounts
        API under (C{"https://example.com/auth"}): paths are signed as the
        daemon sees them, without that prefix.
    @param agent: an L{IAgent} to send requests with; by default the client
        makes one with a persistent connection pool (see L{close}).
    @param reactor: the reactor for that default agent; the global one if absent.
    """

    def __init__(self, base_url: str, *, agent: IAgent | None = None, reactor: Any = None) -> None:
        super().__init__(base_url, agent, reactor)
        # The last Time-Sent used per (user, path), see _timeSent.
        self._lastSent: dict[tuple[int, str], int] = {}

    def __repr__(self) -> str:
        return f"AccountsClient({self.base_url!r})"

    @_returnsDeferred
    async def register(
        self, user: str, password: str, email: str, recaptcha: str | None = None
    ) -> int:
        """
        Create a user; fires with its id. L{Conflict} if the name is taken,
        L{BadRequest} for a refused name, password, e-mail or reCAPTCHA.
        When the daemon mails registration links, the user must follow it
        before its signed requests are accepted (see L{registered}).
        """
        body = {"User": user, "Password": password, "Email": email}
        if recaptcha is not None:
            body["Recaptcha"] = recaptcha
        answer = await self._request("POST", "/users", body)
        return int(answer["UserID"])

    @_returnsDeferred
    async def login(self, user: str, password: str, stay_logged_in: bool = False) -> Session:
        """
        Log in; fires with a L{Session} (the live one, extended, if the user
        is logged in already). L{Unauthorized} for a wrong user or password;
        L{TooManyAttempts} after too many of them from this IP, even with the
        right password, until its C{retry_after} seconds have passed.
        """
        answer = await self._request(
            "POST",
            "/login",
            {"User": user, "Password": password, "StayLoggedIn": bool(stay_logged_in)},
        )
        return Session.from_answer(answer)

    @_returnsDeferred
    async def verify(self, user: str, secret: str) -> Session:
        """
        Check that C{secret} is still C{user}'s session secret, extending it;
        fires with the L{Session}, or fails with L{Unauthorized}.
        """
        answer = await self._request("POST", "/verifySecret", {"User": user, "Secret": secret})
        return Session.from_answer(answer)

    @_returnsDeferred
    async def logout(self, session: Session) -> None:
        """
        End C{session}: its secret stops working at once.
        """
        await self._signed(session, "POST", "/logout")

    @_returnsDeferred
    async def change_password(self, user: str, password: str, new_password: str) -> None:
        """
        Change C{user}'s password; every session of the user ends. Wrong
        passwords count towards L{TooManyAttempts} as for L{login}.
        """
        await self._request(
            "POST",
            "/changePassword",
            {"User": user, "Password": password, "NewPassword": new_password},
        )

    @_returnsDeferred
    async def reset_password(self, user: str | None = None, email: str | None = None) -> None:
        """
        Ask for a password reset link for the user named C{user}, or for
        every user of C{email}: give exactly one. The daemon mails the link
        (C{<public-url>/users/<id>/reset?code=...}, a page that asks for the
        new password) and answers the same whether or not there is such a
        user, so this fires with C{None} either way. L{Unavailable} when the
        daemon has no mail configured.

        @raise TypeError: neither or both of C{user} and C{email}.
        """
        if (user is None) == (email is None):
            raise TypeError("give exactly one of user= or email=")
        body = {"User": user} if user is not None else {"Email": email}
        await self._request("POST", "/resetPassword", body)

    @_returnsDeferred
    async def confirm_reset(self, user_id: int, code: str, new_password: str) -> None:
        """
        Set a new password with the C{code} of a mailed reset link (its
        C{/users/<user_id>/reset?code=<code>}); every session of the user
        ends. L{BadRequest} for a wrong, used or expired code, or a refused
        password.
        """
        await self._request(
            "POST",
            "/resetPassword/confirm",
            {"UserID": operator.index(user_id), "Code": code, "NewPassword": new_password},
        )

    @_returnsDeferred
    async def events(self, session: Session, limit: int | None = None) -> list[AccountEvent]:
        """
        The session's user's audit log, newest first: a list of
        L{AccountEvent}, the daemon's default of 50 unless C{limit} says how
        many (1 to 500; L{BadRequest} otherwise).
        """
        path = f"/users/{session.user_id}/events"
        if limit is not None:
            path += f"?limit={operator.index(limit)}"
        answer = await self._signed(session, "GET", path)
        return [AccountEvent.from_answer(event) for event in answer["Events"]]

    @_returnsDeferred
    async def relay_token(self, session: Session, app: str) -> RelayToken:
        """
        A relay token of C{app} for the session's user, who connects as
        C{user:<id>} (SPEC §8.4), so a client needs no backend of its own
        to connect::

            async def token():
                return (await accounts.relay_token(session, "myapp")).token

            connect("https://relay.example.com", token, on_message)

        L{NotFound} for an unknown app or one that does not set
        C{<APP>_SOCKTOPUS_USER_TOKENS=1}.
        """
        answer = await self._signed(session, "POST", "/relayToken", body={"App": app})
        return RelayToken(answer["Token"], answer["ConnectionID"])

    @_returnsDeferred
    async def registered(self, session: Session) -> bool:
        """
        Whether the session's user has followed its registration link (always
        true when the daemon does not mail links). Works before registering.
        """
        answer = await self._signed(session, "GET", f"/users/{session.user_id}/registered")
        return bool(answer["Registered"])

    @_returnsDeferred
    async def get_ids(
        self, session: Session, names: Iterable[str] | str
    ) -> tuple[dict[str, int], dict[str, str]]:
        """
        Look up user ids by name. Fires with C{(ids, errors)}: C{{name: id}}
        for the names found and C{{name: message}} for the others.
        """
        names = [names] if isinstance(names, str) else list(names)
        query = ",".join(quote(name, safe="") for name in names)
        answer = await self._signed(session, "GET", "/users/getID?usernames=" + query)
        return answer["UserIDs"], answer["Errors"]

    @_returnsDeferred
    async def check_headers(self, headers: Mapping[Any, Any]) -> int:
        """
        Check a user's Auth Headers on behalf of another backend (C{POST
        /authHeaders}); fires with the user's id, or fails with
        L{Unauthorized}. C{headers} may be all of the incoming request's
        headers (str or bytes names and values, or lists of them): only the
        Auth Headers are forwarded. Each set of headers is accepted once.
        """
        wanted = {name.lower(): name for name in AUTH_HEADER_NAMES}
        forwarded = {}
        for name, value in headers.items():
            key = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
            if key in wanted:
                forwarded[wanted[key]] = _headerValue(value)
        answer = await self._request("POST", "/authHeaders", headers=forwarded)
        return int(answer["UserID"])

    @_returnsDeferred
    async def signed_request(self, session: Session, method: str, path: str, **kw: Any) -> Any:
        """
        Send C{method path} (query string included, e.g.
        C{"/users/getID?username=a"}) with Auth Headers for C{session}.
        Other keywords go to L{treq.request} (C{json=}, C{data=}, C{headers=},
        C{timeout=}...), except C{params}: the query must be in C{path}, where
        it is signed. Fires with the decoded JSON answer.
        """
        if "params" in kw:
            raise TypeError("put the query string in path, where it is signed, not params=")
        return await self._signed(session, method, path, **kw)

    async def _signed(self, session: Session, method: str, path: str, **kw: Any) -> Any:
        wire = _wirePath(path)
        headers = dict(kw.pop("headers", None) or {})
        headers.update(
            auth_headers(
                session.user_id, session.secret, wire, self._timeSent(session.user_id, wire)
            )
        )
        return await self._request(method, wire, headers=headers, **kw)

    def _timeSent(self, user_id: int, path: str) -> int:
        """
        Now, in seconds, unless this client already signed the same request
        this second: the daemon accepts a set of headers once, so a repeat
        (asking L{registered} twice) is stamped a second later. The daemon
        allows 10 s either way, so bursts of up to about ten identical
        requests a second work.
        """
        now = int(time.time())
        # Stamps before now can no longer collide with a new one.
        for key in [k for k, stamp in self._lastSent.items() if stamp < now]:
            del self._lastSent[key]
        stamp = max(now, self._lastSent.get((user_id, path), now - 1) + 1)
        self._lastSent[(user_id, path)] = stamp
        return stamp


# -- the client's side of the relay ----------------------------------------------


def receive_url(url: str, path: str = "/recieve") -> str:
    """
    The WebSocket URL of the relay's C{path} below C{url}, the daemon's base
    URL: C{http://} becomes C{ws://} and C{https://} C{wss://}; a base path
    (the prefix a proxy serves the relay under) is kept, a query or a
    fragment dropped. C{receive_url("https://example.com/relay")} is
    C{"wss://example.com/relay/recieve"}.

    @raise ValueError: another scheme, no host, or a bad port.
    """
    parts = urlsplit(url.strip())
    scheme = _WEBSOCKET_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"the URL must start with ws://, wss://, http:// or https://: {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL has no host: {url!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"the URL's port must be a number from 1 to 65535: {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


_WEBSOCKET_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """
    A L{RelayConnection} will try again in C{delay} seconds, its
    C{attempt}th failure in a row. C{error} is why a connection could not
    open: a L{SocktopusError} when the daemon refused the token (its status
    and message), or Twisted's L{ConnectError} (refused, DNS, timeout, a
    handshake that failed below HTTP). It is C{None} when an open
    connection dropped without the daemon saying C{CLOSE}; C{code} is then
    its WebSocket close code.
    """

    attempt: int
    delay: float
    code: int | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class Closed:
    """
    How a L{RelayConnection} ended, for good. C{reason} is C{"kicked"} when
    the daemon said C{CLOSE} (a kick, a newer connection with the same id, or
    the daemon shutting down), C{"closed"} after L{RelayConnection.close},
    C{"failed"} after C{max_attempts} failures in a row (C{error} is the
    last one's, as in L{Reconnecting}). C{code} is the last connection's
    WebSocket close code, if one was open.
    """

    reason: str
    code: int | None
    error: BaseException | None = None


class _ReceiveProtocol(WebSocketClientProtocol):
    """
    One attempt of a L{RelayConnection}: frames go to it; a refused
    upgrade is kept as the L{SocktopusError} it means.
    """

    owner: RelayConnection
    refusal: SocktopusError | None = None
    answered = False
    wasOpen = False
    toldToClose = False

    def processHandshake(self) -> None:
        # Autobahn fails a non-101 answer on its status line alone; read the
        # body first, where the daemon says why ("Invalid signature").
        # Autobahn calls this again as more bytes arrive.
        self.answered = True
        end = self.data.find(b"\r\n\r\n")
        if end >= 0 and self.refusal is None:
            head, body = self.data[:end].decode("latin-1"), self.data[end + 4 :]
            statusLine, *headers = head.split("\r\n")
            words = statusLine.split(" ", 2)
            if len(words) >= 2 and words[1].isdigit() and words[1] != "101":
                length = retryAfter = None
                for line in headers:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length" and value.strip().isdigit():
                        length = int(value.strip())
                    elif name == "retry-after":
                        retryAfter = value
                if length is not None and len(body) < length:
                    return
                phrase = words[2] if len(words) > 2 else ""
                self.refusal = _error(
                    int(words[1]), phrase.encode("latin-1"), body[:length], retryAfter
                )
        super().processHandshake()

    def onOpen(self) -> None:
        self.wasOpen = True
        self.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return
        text = payload.decode("utf-8")
        if text.startswith("DATA:"):
            self.owner._call(self.owner._on_message, text[5:])
        elif text == "CLOSE":
            self.toldToClose = True

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.owner._ended(self, code)

    def failure(self) -> BaseException:
        """
        Why this attempt did not open.
        """
        if self.refusal is not None:
            return self.refusal
        reason = self.wasNotCleanReason
        if not self.answered and (reason is None or reason.startswith("peer dropped")):
            reason = "the server closed the connection without answering the WebSocket upgrade"
        return ConnectError(string=reason or "the WebSocket handshake did not complete")


class RelayConnection:
    """
    A client's connection to the relay, kept open: a WebSocket to
    C{/recieve}, reopened with a fresh token (tokens live seconds) after it
    drops or cannot open, with exponential backoff, until the daemon says
    C{CLOSE} or L{close} is called. Make one with L{connect}.

    It sends WebSocket pings every C{ping_interval} seconds, which keep it
    from the daemon's idle timeout, and drops a connection whose pong does
    not come within C{ping_interval} seconds (a dead daemon or network), to
    reconnect. Autobahn answers the daemon's own pings.

    @ivar connected: whether a connection is open now.
    """

    def __init__(
        self,
        url: str,
        get_token: Callable[[], str | Deferred[str] | Coroutine[Any, Any, str]],
        on_message: Callable[[str], object],
        *,
        on_open: Callable[[], object] | None = None,
        on_reconnecting: Callable[[Reconnecting], object] | None = None,
        reactor: Any = None,
        ping_interval: float = 10.0,
        connect_timeout: float = 10.0,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        max_attempts: int | None = None,
        path: str = "/recieve",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.url = receive_url(url, path)
        self._reactor = reactor
        self._get_token = get_token
        self._on_message = on_message
        self._on_open = on_open
        self._on_reconnecting = on_reconnecting
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._max_attempts = max_attempts
        self._failures = 0
        self._finished = False
        self._result: Closed | None = None
        self._waiting: list[Deferred[Closed]] = []
        # At most one of these at a time: the next try's timer, the
        # attempt being made (token, then TCP), the protocol it gave.
        self._retry: Any = None
        self._attempt: Deferred[Any] | None = None
        self._protocol: _ReceiveProtocol | None = None

    def __repr__(self) -> str:
        return f"RelayConnection({self.url!r})"

    @property
    def connected(self) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.state == protocol.STATE_OPEN

    def when_closed(self) -> Deferred[Closed]:
        """
        A Deferred that fires with L{Closed} once the connection has ended
        for good; a new one each call.
        """
        if self._result is not None:
            return succeed(self._result)
        d: Deferred[Closed] = Deferred()
        self._waiting.append(d)
        return d

    def close(self) -> Deferred[Closed]:
        """
        Close the connection (a clean WebSocket close) and stop reconnecting;
        fires with L{Closed} once it is closed.
        """
        if not self._finished:
            self._finished = True
            self._cancelRetry()
            protocol = self._protocol
            if self._attempt is not None:
                self._attempt.cancel()
            elif protocol is not None and protocol.state == protocol.STATE_OPEN:
                # onClose settles, once the daemon answered or Autobahn's
                # closeHandshakeTimeout ran out.
                protocol.sendClose(1000)
            elif protocol is not None:
                protocol.dropConnection(abort=True)
            else:
                self._settle(Closed("closed", None))
        return self.when_closed()

    # -- inside ----------------------------------------------------------

    def _start(self) -> None:
        self._retry = None
        self._attempt = Deferred.fromCoroutine(self._open())
        self._attempt.addErrback(self._notOpened)

    async def _open(self) -> None:
        token = await maybeDeferred(self._get_token)
        factory = WebSocketClientFactory(
            f"{self.url}?token={quote(token, safe='')}", reactor=self._reactor
        )
        factory.protocol = _ReceiveProtocol
        factory.setProtocolOptions(
            autoPingInterval=self._ping_interval,
            autoPingTimeout=self._ping_interval,
            openHandshakeTimeout=self._connect_timeout,
        )
        endpoint: Any = HostnameEndpoint(
            self._reactor, factory.host, factory.port, timeout=self._connect_timeout
        )
        if factory.isSecure:
            endpoint = wrapClientTLS(optionsForClientTLS(factory.host), endpoint)
        protocol = await endpoint.connect(_OwnedFactory(factory, self))
        # From here the protocol's onOpen and onClose say what happens.
        self._attempt = None
        self._protocol = protocol

    def _notOpened(self, failure: Failure) -> None:
        self._attempt = None
        if self._finished:
            self._settle(Closed("closed", None))
        else:
            self._failed(None, failure.value)

    def _opened(self, protocol: _ReceiveProtocol) -> None:
        if self._finished:
            protocol.sendClose(1000)
            return
        self._failures = 0
        self._call(self._on_open)

    def _ended(self, protocol: _ReceiveProtocol, code: int | None) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        wasOpen = protocol.wasOpen
        if self._finished:
            self._settle(Closed("closed", code if wasOpen else None))
        elif protocol.toldToClose:
            # CLOSE is the daemon's final word: a kicked client that came
            # back would be refused, a replaced one would replace its
            # successor, and a stopping daemon is going away.
            self._finish(Closed("kicked", code))
        elif wasOpen:
            self._failed(code, None)
        else:
            self._failed(None, protocol.failure())

    def _failed(self, code: int | None, error: BaseException | None) -> None:
        self._failures += 1
        if self._max_attempts is not None and self._failures >= self._max_attempts:
            self._finish(Closed("failed", code, error))
            return
        # Exponential backoff, capped, half of it random, so that clients
        # dropped together (a restart, a network blip) do not return together.
        ceiling = min(self._max_delay, self._min_delay * 2 ** (self._failures - 1))
        delay = ceiling / 2 + random.random() * ceiling / 2
        self._call(self._on_reconnecting, Reconnecting(self._failures, delay, code, error))
        # The handler may have called close().
        if not self._finished:
            self._retry = self._reactor.callLater(delay, self._start)

    def _finish(self, result: Closed) -> None:
        self._finished = True
        self._cancelRetry()
        self._settle(result)

    def _settle(self, result: Closed) -> None:
        if self._result is not None:
            return
        self._result = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)

    def _cancelRetry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _call(self, handler: Callable[..., object] | None, *args: Any) -> None:
        # A handler's mistake is logged, not allowed to break the connection.
        if handler is None:
            return
        try:
            handler(*args)
        except Exception:
            _log.failure("Error in a RelayConnection handler ({handler!r})", handler=handler)


class _OwnedFactory(Factory):
    """
    Builds the protocol with L{RelayConnection} set as its C{owner}, so
    that each attempt reports to the connection that made it.
    """

    def __init__(self, factory: WebSocketClientFactory, owner: RelayConnection) -> None:
        self.factory = factory
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _ReceiveProtocol:
        protocol = self.factory.buildProtocol(addr)
        protocol.owner = self.owner
        return protocol


def connect(
    url: str,
    get_token: Callable[[], str | Deferred[str] | Coroutine[Any, Any, str]],
    on_message: Callable[[str], object],
    **options: Any,
) -> RelayConnection:
    """
    Connect to the relay at C{url} (the daemon's base URL: C{ws://},
    C{wss://}, C{http://} or C{https://}, with a proxy's prefix if any) as
    a client, and stay connected; see L{RelayConnection} for the
    keyword C{options}. C{get_token()} returns a token, or a Deferred or
    coroutine of one, from your backend or L{make_token}; it is called
    again before each reconnection. C{on_message(content)} gets the content
    of each C{DATA:} frame, in order::

        connection = connect(
            "http://localhost:8080",
            lambda: make_token("demo", "change-me", "user-42"),
            print,
            on_reconnecting=lambda event: print("trying again in", event.delay),
        )
        closed = await connection.when_closed()  # Closed("kicked", 1000)

    Other handlers: C{on_open()} each time a connection opens (again);
    C{on_reconnecting(event)} with a L{Reconnecting} when one dropped or
    could not open (it may call L{RelayConnection.close} to give up).
    Options: C{reactor}, C{ping_interval} (10 s), C{connect_timeout}
    (10 s, for the TCP connect and for the handshake), C{min_delay}
    (0.5 s) and C{max_delay} (30 s) for the backoff, C{max_attempts}
    (unlimited), C{path} (C{"/recieve"}).
    """
    connection = RelayConnection(url, get_token, on_message, **options)
    connection._start()
    return connection
