# -*- test-case-name: tests.accounts.test_api -*-
"""
The accounts endpoints (SPEC §4), as the original auth server spelled them:
capitalised JSON fields and C{{"Error": "..."}} bodies.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from socktopus_tw.accounts.headers import SignedRequest
from socktopus_tw.accounts.service import EVENTS_DEFAULT, EVENTS_MOST, Accounts
from socktopus_tw.accounts.sessions import Session
from socktopus_tw.errors import (
    AccountsMethodNotAllowed,
    AccountsNotFound,
    AccountsTooLarge,
    BadRequest,
    NotAuthorized,
    WrongCredentials,
)
from socktopus_tw.http.proxy import clientAddress
from socktopus_tw.http.respond import HANDLED, JsonResource, respond, writeRedirect

#: The most names one getID request may ask for.
MAX_NAMES = 1000


def jsonBody(request: Request) -> dict[str, Any]:
    """
    The request's JSON object. Unknown fields are ignored, as the original
    server's decoder did; anything that is not an object is a 400.
    """
    try:
        value = orjson.loads(request.content.getvalue())
    except orjson.JSONDecodeError:
        raise BadRequest() from None
    if type(value) is not dict:
        raise BadRequest()
    return value


def text(body: dict[str, Any], name: str, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if type(value) is not str:
        raise BadRequest(f"{name} must be a string")
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    """
    A boolean that clients send as JSON C{true}/C{false} or as a string.
    """
    value = body.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"{name} must be true or false")


def requestedPath(request: Request) -> str:
    return request.uri.decode("utf-8", "replace")


class AccountsResource(JsonResource):
    """
    An accounts endpoint: errors in the accounts shape.
    """

    notFound = AccountsNotFound
    methodNotAllowed = AccountsMethodNotAllowed
    requestTooLarge = AccountsTooLarge

    def __init__(self, accounts: Accounts) -> None:
        super().__init__()
        self.accounts = accounts

    async def signed(
        self, request: Request, checkPath: bool = True, allowUnregistered: bool = False
    ) -> Session:
        """
        The session of a request's valid Auth Headers, or L{NotAuthorized}.
        """
        signed = SignedRequest.fromHeaders(request.getHeader)
        return await self.accounts.authenticate(
            signed, requestedPath(request) if checkPath else None, allowUnregistered
        )


class Missing(AccountsResource):
    """
    Any path below the accounts endpoints that nobody serves: a 404.
    """

    def render(self, request: Request) -> object:
        return respond(request, self._notFound)


class Users(AccountsResource):
    """
    C{POST /users} registers; below it are C{/users/getID} and C{/users/<id>/...}.
    """

    isLeaf = False

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"getID":
            return GetIds(self.accounts)
        if path.isdigit() and len(path) < 19:
            return User(self.accounts, int(path))
        return Missing(self.accounts)

    async def json_POST(self, request: Request) -> dict[str, Any]:
        body = jsonBody(request)
        userId = await self.accounts.register(
            text(body, "User"),
            text(body, "Password"),
            text(body, "Email"),
            text(body, "Recaptcha", required=False),
            clientAddress(request),
        )
        return {"UserID": userId}


class User(Resource):
    """
    C{/users/<id>/register}, C{/users/<id>/registered}, C{/users/<id>/events}
    and C{/users/<id>/reset}.
    """

    def __init__(self, accounts: Accounts, userId: int) -> None:
        super().__init__()
        self.accounts = accounts
        self.userId = userId

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"register":
            return Register(self.accounts, self.userId)
        if path == b"registered":
            return Registered(self.accounts, self.userId)
        if path == b"events":
            return UserEvents(self.accounts, self.userId)
        if path == b"reset":
            return ResetPage(self.accounts, self.userId)
        return Missing(self.accounts)

    def render(self, request: Request) -> object:
        return Missing(self.accounts).render(request)


class Register(AccountsResource):
    """
    C{GET /users/<id>/register?code=C}: the mailed link.
    """

    def __init__(self, accounts: Accounts, userId: int) -> None:
        super().__init__(accounts)
        self.userId = userId

    async def json_GET(self, request: Request) -> object:
        codes = request.args.get(b"code") or [b""]
        code = codes[0].decode("ascii", "replace")
        await self.accounts.completeRegistration(self.userId, code, clientAddress(request))
        writeRedirect(request, self.accounts.registeredRedirect.encode("utf-8"))
        return HANDLED


class Registered(AccountsResource):
    """
    C{GET /users/<id>/registered}: the one place an unregistered user's
    Auth Headers are accepted, to ask about itself.
    """

    def __init__(self, accounts: Accounts, userId: int) -> None:
        super().__init__(accounts)
        self.userId = userId

    async def json_GET(self, request: Request) -> dict[str, Any]:
        session = await self.signed(request, allowUnregistered=True)
        if session.userId != self.userId:
            raise NotAuthorized()
        return {"Registered": await self.accounts.isRegistered(self.userId)}


class Login(AccountsResource):
    """
    C{POST /login}, with a JSON body or C{Authorization: Basic}.
    """

    async def json_POST(self, request: Request) -> dict[str, Any]:
        authorization = request.getHeader(b"authorization")
        content = request.content.getvalue().strip()
        body = jsonBody(request) if content or authorization is None else {}
        if authorization is not None:
            name, password = basicCredentials(authorization)
        else:
            name, password = text(body, "User"), text(body, "Password")
        session = await self.accounts.login(
            name, password, flag(body, "StayLoggedIn"), clientAddress(request)
        )
        return session.answer()


def basicCredentials(authorization: bytes) -> tuple[str, str]:
    scheme, _, encoded = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        raise WrongCredentials()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise WrongCredentials() from None
    name, colon, password = decoded.partition(":")
    if not colon:
        raise WrongCredentials()
    return name, password


class VerifySecret(AccountsResource):
    """
    C{POST /verifySecret}: is this still the user's secret? Extends it.
    """

    async def json_POST(self, request: Request) -> dict[str, Any]:
        body = jsonBody(request)
        session = await self.accounts.verifySecret(text(body, "User"), text(body, "Secret"))
        return session.answer()


class Logout(AccountsResource):
    async def json_POST(self, request: Request) -> dict[str, Any]:
        session = await self.signed(request)
        await self.accounts.logout(session, clientAddress(request))
        return {}


class ChangePassword(AccountsResource):
    async def json_POST(self, request: Request) -> dict[str, Any]:
        body = jsonBody(request)
        await self.accounts.changePassword(
            text(body, "User"),
            text(body, "Password"),
            text(body, "NewPassword"),
            clientAddress(request),
        )
        return {}


class AuthHeaders(AccountsResource):
    """
    C{POST /authHeaders}: other backends check a user's request here, so the
    Path header names their endpoint, not this one.
    """

    async def json_POST(self, request: Request) -> dict[str, Any]:
        session = await self.signed(request, checkPath=False)
        return {"UserID": session.userId}


class GetIds(AccountsResource):
    """
    C{GET /users/getID?username=a&usernames=b,c}.
    """

    async def json_GET(self, request: Request) -> dict[str, Any]:
        await self.signed(request)
        names: list[str] = []
        for raw in request.args.get(b"username", []):
            names.append(raw.decode("utf-8", "replace"))
        for raw in request.args.get(b"usernames", []):
            names.extend(n for n in raw.decode("utf-8", "replace").split(",") if n)
        if len(names) > MAX_NAMES:
            raise BadRequest(f"At most {MAX_NAMES} names per request")
        ids, errors = await self.accounts.ids(names)
        return {"UserIDs": ids, "Errors": errors}


class UserEvents(AccountsResource):
    """
    C{GET /users/<id>/events?limit=N}: the user's own audit log, newest first.
    """

    def __init__(self, accounts: Accounts, userId: int) -> None:
        super().__init__(accounts)
        self.userId = userId

    async def json_GET(self, request: Request) -> dict[str, Any]:
        session = await self.signed(request)
        limits = request.args.get(b"limit") or [b"%d" % EVENTS_DEFAULT]
        if not limits[0].isdigit() or not 1 <= int(limits[0]) <= EVENTS_MOST:
            raise BadRequest(f"limit must be a number from 1 to {EVENTS_MOST}")
        events = await self.accounts.events(session, self.userId, int(limits[0]))
        return {
            "Events": [
                {"Type": event.type, "Time": rfc3339(event.time), "IP": event.ip}
                for event in events
            ]
        }


def rfc3339(milliseconds: int) -> str:
    """
    Unix milliseconds as RFC 3339 in UTC, to the millisecond.
    """
    when = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{milliseconds % 1000:03d}Z"


class ResetPassword(AccountsResource):
    """
    C{POST /resetPassword} C{{"User": name}} or C{{"Email": address}}: always
    C{{}}, whether or not there is such a user (SPEC §8.2).
    """

    isLeaf = False

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"confirm":
            return ConfirmReset(self.accounts)
        return Missing(self.accounts)

    async def json_POST(self, request: Request) -> dict[str, Any]:
        body = jsonBody(request)
        name, email = body.get("User"), body.get("Email")
        if (name is None) == (email is None):
            raise BadRequest("Give User or Email")
        if name is not None:
            await self.accounts.requestReset(text(body, "User"), None, clientAddress(request))
        else:
            await self.accounts.requestReset(None, text(body, "Email"), clientAddress(request))
        return {}


class ConfirmReset(AccountsResource):
    """
    C{POST /resetPassword/confirm} C{{"UserID": id, "Code": code,
    "NewPassword": password}}.
    """

    async def json_POST(self, request: Request) -> dict[str, Any]:
        body = jsonBody(request)
        userId = body.get("UserID")
        if type(userId) is not int or not 0 < userId < 2**63:
            raise BadRequest("UserID must be a number")
        await self.accounts.confirmReset(
            userId, text(body, "Code"), text(body, "NewPassword"), clientAddress(request)
        )
        return {}


class ResetPage(Resource):
    """
    C{GET /users/<id>/reset?code=C}: the mailed link, a page that asks for
    the new password and posts it with the code to C{/resetPassword/confirm}
    (relative, so it works under nginx's path prefix too).
    """

    isLeaf = True

    def __init__(self, accounts: Accounts, userId: int) -> None:
        super().__init__()
        self.accounts = accounts
        self.userId = userId

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        # The code is in the URL: never sent on as a Referer.
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(
            b"content-security-policy",
            b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
        )
        request.setHeader(b"cache-control", b"no-store")
        return RESET_PAGE.replace(b"USER_ID", b"%d" % self.userId)


RESET_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Choose a new password</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}
input,button{font:inherit;width:100%;margin:.25rem 0 1rem;padding:.5rem}</style></head>
<body><h1>Choose a new password</h1>
<form id="reset"><label>New password<input id="password" type="password"
autocomplete="new-password" required minlength="1"></label>
<button type="submit">Set password</button></form><p id="result" role="status"></p>
<script>
const form = document.getElementById("reset"), result = document.getElementById("result");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const code = new URLSearchParams(location.search).get("code") || "";
  const answer = await fetch("../../resetPassword/confirm", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({UserID: USER_ID, Code: code,
      NewPassword: document.getElementById("password").value})});
  const body = await answer.json().catch(() => ({}));
  result.textContent = answer.ok ? "Your password is changed. Log in with it."
    : (body.Error || "Something went wrong; try again.");
  if (answer.ok) form.remove();
});
</script></body></html>
"""


class RelayTokenResource(AccountsResource):
    """
    C{POST /relayToken} C{{"App": name}} with Auth Headers: a relay token for
    the signed-in user, as C{user:<id>} (SPEC §8.4).
    """

    async def json_POST(self, request: Request) -> dict[str, Any]:
        session = await self.signed(request)
        token, connectionId = self.accounts.relayToken(session, text(jsonBody(request), "App"))
        return {"Token": token, "ConnectionID": connectionId}


def routes(accounts: Accounts) -> list[tuple[bytes, IResource]]:
    """
    The accounts endpoints, by their first path segment.
    """
    return [
        (b"users", Users(accounts)),
        (b"login", Login(accounts)),
        (b"verifySecret", VerifySecret(accounts)),
        (b"logout", Logout(accounts)),
        (b"changePassword", ChangePassword(accounts)),
        (b"authHeaders", AuthHeaders(accounts)),
        (b"resetPassword", ResetPassword(accounts)),
        (b"relayToken", RelayTokenResource(accounts)),
    ]
