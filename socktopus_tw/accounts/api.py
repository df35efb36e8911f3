# -*- test-case-name: tests.accounts.test_api -*-
"""
The accounts endpoints (SPEC §4), as the original auth server spelled them:
capitalised JSON fields and C{{"Error": "..."}} bodies.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from socktopus_tw.accounts.headers import SignedRequest
from socktopus_tw.accounts.service import Accounts
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
    C{/users/<id>/register} and C{/users/<id>/registered}.
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
        await self.accounts.completeRegistration(self.userId, code)
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
        session = await self.accounts.login(name, password, flag(body, "StayLoggedIn"))
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
        await self.accounts.logout(session)
        return {}


class ChangePassword(AccountsResource):
    async def json_POST(self, request: Request) -> dict[str, Any]:
        body = jsonBody(request)
        await self.accounts.changePassword(
            text(body, "User"), text(body, "Password"), text(body, "NewPassword")
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
    ]
