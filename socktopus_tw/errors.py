# -*- test-case-name: tests.relay.test_api,tests.accounts.test_api -*-
"""
Errors that end a request with a status and a JSON body.

The two services keep the bodies of the two Go originals: the relay answers
C{{"code": N, "message": "..."}}, the accounts service C{{"Error": "..."}}.
Domain code raises these; only L{socktopus_tw.http.respond} turns them into responses.
"""

from __future__ import annotations


class StartupError(Exception):
    """
    The daemon cannot start for a reason the user can fix; the message says it.
    The daemon prints it as one line and exits non-zero.
    """


class ApiError(Exception):
    """
    A refusal with an HTTP status and a fixed, client-facing message.
    """

    status: int = 500
    message: str = "Internal error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)

    def body(self) -> dict:
        return {"code": self.status, "message": self.message}

    def headers(self) -> dict[bytes, bytes]:
        """
        Headers the answer carries besides the body's (C{Retry-After}, say).
        """
        return {}


class RelayError(ApiError):
    """
    An error in the relay's shape: C{{"code": 400, "message": "..."}}.
    """


class NotFound(RelayError):
    status = 404
    message = "Not found"


class MethodNotAllowed(RelayError):
    status = 405
    message = "Method not allowed"

    def __init__(self, allowed: list[bytes]) -> None:
        super().__init__()
        self.allowed = allowed


class RequestTooLarge(RelayError):
    status = 413
    message = "Request body too large"


class UriTooLong(RelayError):
    """
    A request line longer than twisted.web reads (16 KiB): answered before
    the connection is closed, in the relay's shape whatever the path.
    """

    status = 414
    message = "URI too long"


class HeadersTooLarge(RelayError):
    """
    A header line, or a head, longer than twisted.web reads (16 KiB), or more
    than its 500 header lines.
    """

    status = 431
    message = "Request header fields too large"


class MalformedRequest(RelayError):
    status = 400
    message = "Malformed request"


class SecretNotFound(RelayError):
    status = 404
    message = "Secret not found"


class InvalidSecret(RelayError):
    status = 401
    message = "Invalid secret"


class InternalError(RelayError):
    status = 500
    message = "Internal error"


class ServiceUnavailable(RelayError):
    status = 503
    message = "Service unavailable"


class AccountsError(ApiError):
    """
    An error in the accounts service's shape, kept from the original auth
    server: C{{"Error": "..."}}.
    """

    status = 400
    message = "Bad request"

    def body(self) -> dict:
        return {"Error": self.message}


class BadRequest(AccountsError):
    status = 400
    message = "Malformed request"


class NotAuthorized(AccountsError):
    status = 401
    message = "Not Authorized Request"


class WrongCredentials(AccountsError):
    status = 401
    message = "User and password combination incorrect"


class UserNameTaken(AccountsError):
    status = 409
    message = "User name already taken"


class AccountsTooLarge(AccountsError):
    status = 413
    message = "Request body too large"


class AccountsNotFound(AccountsError):
    status = 404
    message = "Not found"


class AccountsMethodNotAllowed(AccountsError, MethodNotAllowed):
    status = 405
    message = "Method not allowed"


class Unavailable(AccountsError):
    """
    A service the request needs (the database, the mail server, reCAPTCHA)
    did not answer; the request may be tried again.
    """

    status = 503
    message = "Service unavailable, try again"
