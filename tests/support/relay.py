"""
The relay's REST endpoints end to end: the exact refusal bodies of SPEC §3,
and a test case with a real daemon per test that checks many bad requests
at once.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.daemon import Daemon

MALFORMED = {"code": 400, "message": "Malformed request"}
MALFORMED_TOKEN = {"code": 400, "message": "Malformed token"}
SECRET_NOT_FOUND = {"code": 404, "message": "Secret not found"}
INVALID_SECRET = {"code": 401, "message": "Invalid secret"}
TOKEN_EXPIRED = {"code": 401, "message": "Token expired"}
INVALID_SIGNATURE = {"code": 401, "message": "Invalid signature"}
NOT_FOUND = {"code": 404, "message": "Not found"}


def fields(*parts: str) -> str:
    """
    Join token fields the way a token does, for building broken tokens.
    """
    return "h".join(parts)


def raw(value: Any) -> bytes:
    """
    JSON text of C{value}; lone surrogates stay C{\\ud800} escapes, as any
    JSON encoder writes them.
    """
    return json.dumps(value).encode("ascii")


class RelayApiTestCase(TestCase):
    """
    A daemon per test, and helpers that check many bad requests at once.
    """

    timeout = 60

    def setUp(self) -> None:
        self.daemon = Daemon(self)

    @inlineCallbacks
    def assertAnswers(self, path: str, bodies: list[Any], status: int, expected: Any):
        """
        POST each body to C{path}; every answer must be C{status} with the
        JSON body C{expected}. Reports every mismatch, not only the first.
        """
        wrong = []
        for body in bodies:
            data = body if isinstance(body, bytes) else raw(body)
            code, answer, response = yield self.daemon.post(path, data)
            contentType = response.headers.getRawHeaders(b"content-type", [b""])[0]
            if (code, answer) != (status, expected) or contentType != b"application/json":
                wrong.append(f"{data[:120]!r} -> {code} {str(answer)[:200]} ({contentType!r})")
        if wrong:
            self.fail(
                f"{len(wrong)} of {len(bodies)} requests to {path} answered wrongly:\n"
                + "\n".join(wrong)
            )

    def assertMalformed(self, path: str, bodies: list[Any]):
        return self.assertAnswers(path, bodies, 400, MALFORMED)
