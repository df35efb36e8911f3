# -*- test-case-name: tests.test_web -*-
"""
Errors that end a request with a status and a JSON body.

The two services keep the bodies of the two Go originals: the relay answers
C{{"code": N, "message": "..."}}, the accounts service C{{"Error": "..."}}.
Domain code raises these; only L{socktopus_tw.web} turns them into responses.
"""

from __future__ import annotations


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
