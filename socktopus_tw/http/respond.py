# -*- test-case-name: tests.http.test_respond -*-
"""
The one way an endpoint answers: its handler returns a JSON-able value (or a
Deferred of one, or is a coroutine) or raises an L{ApiError}, and
L{respond} writes the response. No endpoint formats its own body or error.

Both HTTP paths answer through here: twisted.web's requests with
L{writeJson}, the fast path (L{socktopus_tw.http.fastpath}) with
L{encodeAnswer} and L{responseHead}, so their bytes are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutine
from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from socktopus_tw.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
)

log = Logger()

JSON_TYPE = b"application/json"

#: What a handler returns when it has answered (or taken over) the request itself.
HANDLED = object()

#: Reason phrases, both paths: twisted.web's table with RFC 9110's names for
#: what it names the old way (413, 414) or lacks (426, 429, 431), which it
#: would write as "Unknown Status".
REASONS: dict[int, bytes] = {
    **RESPONSES,
    413: b"Content Too Large",
    414: b"URI Too Long",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
}


def forLog(text: str, limit: int = 64) -> str:
    """
    Text a client sent (an app name, a connection id), as a log line may show
    it: escaped as C{repr} escapes it, so no newline or control character
    reaches the log, and cut after C{limit} characters.
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def encodeJson(value: Any) -> bytes:
    """
    Compact UTF-8 JSON, the one encoding every endpoint uses: what
    C{json.dumps(value, separators=(",", ":"), ensure_ascii=False)} writes,
    byte for byte for the strings, lists, dicts, booleans and integers the
    endpoints answer with, about twenty times faster (orjson).
    """
    return orjson.dumps(value)


def errorFor(failure: Failure, method: object, path: object) -> ApiError:
    """
    The error a failed handler answers with: its own L{ApiError}, or, for
    anything else (logged with its traceback), an L{InternalError}.
    """
    error = failure.value
    if isinstance(error, ApiError):
        return error
    log.failure("Unhandled error in {method} {path}", failure, method=method, path=path)
    return InternalError()


def encodeAnswer(status: int, body: Any, method: object, path: object) -> tuple[int, bytes]:
    """
    The status and bytes of an answer: C{body} encoded (unless it already is
    bytes), or, when our own result cannot be encoded, the internal error.
    """
    if type(body) is bytes:
        return status, body
    try:
        return status, encodeJson(body)
    except Exception:
        error = errorFor(Failure(), method, path)
        return error.status, encodeJson(error.body())


def responseHead(status: int, date: bytes, length: int, close: bool) -> bytes:
    """
    The head of a JSON response, as twisted.web writes it for L{writeJson}
    (byte for byte: the fast path's tests compare the two).
    """
    return b"HTTP/1.1 %d %s\r\n%sDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        status,
        REASONS.get(status, b"Unknown Status"),
        b"Connection: close\r\n" if close else b"",
        date,
        JSON_TYPE,
        length,
    )


def writeJson(request: Request, status: int, body: Any) -> None:
    """
    Finish C{request} with a JSON body, unless its client has already gone:
    a late result for a vanished request does nothing.
    """
    # _disconnected: twisted.web's own flag for a client gone mid-request.
    if request.finished or request._disconnected:
        return
    status, data = encodeAnswer(status, body, request.method, request.path)
    request.setResponseCode(status, REASONS.get(status))
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"content-length", b"%d" % len(data))
    request.write(data)
    request.finish()


def writeRedirect(request: Request, url: bytes) -> None:
    """
    Finish C{request} with a 302 to C{url}, unless its client has gone.
    """
    if request.finished or request._disconnected:
        return
    request.redirect(url)
    request.finish()


def writeError(request: Request, error: ApiError) -> None:
    """
    Finish C{request} with C{error}'s status and body.
    """
    if isinstance(error, MethodNotAllowed):
        request.setHeader(b"allow", b", ".join(error.allowed))
    for name, value in error.headers().items():
        request.setHeader(name, value)
    writeJson(request, error.status, error.body())


def _failed(failure: Failure, request: Request) -> None:
    writeError(request, errorFor(failure, request.method, request.path))


def _succeeded(body: Any, request: Request) -> None:
    if body is not HANDLED:
        writeJson(request, 200, body)


def respond(request: Request, handler: Callable[[Request], Any]) -> object:
    """
    Run C{handler(request)} and answer with its result as JSON (status 200),
    or with the L{ApiError} it raised. A handler may return a Deferred or be
    a coroutine; a synchronous result is written at once, with no Deferred
    made for it.
    """
    try:
        result = handler(request)
    except BaseException:
        _failed(Failure(), request)
        return NOT_DONE_YET
    if iscoroutine(result):
        result = Deferred.fromCoroutine(result)
    if result is HANDLED:
        pass
    elif isinstance(result, Deferred):
        result.addCallbacks(_succeeded, _failed, callbackArgs=(request,), errbackArgs=(request,))
    else:
        writeJson(request, 200, result)
    return NOT_DONE_YET


class JsonResource(Resource):
    """
    A leaf endpoint whose C{json_<METHOD>(request)} methods are run through
    L{respond}. Unknown methods are a JSON 405, extra path segments a JSON 404.
    """

    isLeaf = True
    #: The error shape this endpoint's 404/405/413 answers use.
    notFound: type[ApiError] = NotFound
    methodNotAllowed: type[MethodNotAllowed] = MethodNotAllowed
    requestTooLarge: type[ApiError] = RequestTooLarge

    def render(self, request: Request) -> object:
        request.endpoint = type(self).__name__
        if getattr(request, "tooLarge", False):
            return respond(request, self._tooLarge)
        if request.postpath:
            return respond(request, self._notFound)
        method = request.method.decode("ascii", "replace")
        # HEAD is GET without the body, which twisted.web leaves out itself.
        handler = getattr(self, "json_" + ("GET" if method == "HEAD" else method), None)
        if handler is None:
            return respond(request, self._methodNotAllowed)
        return respond(request, handler)

    def _notFound(self, request: Request) -> None:
        raise self.notFound()

    def _tooLarge(self, request: Request) -> None:
        raise self.requestTooLarge()

    def _methodNotAllowed(self, request: Request) -> None:
        allowed = sorted(name[5:].encode("ascii") for name in dir(self) if name.startswith("json_"))
        if b"GET" in allowed:
            allowed.append(b"HEAD")
        raise self.methodNotAllowed(allowed)


class NotFoundResource(JsonResource):
    """
    Every path nobody serves: a JSON 404 whatever the method.
    """

    def render(self, request: Request) -> object:
        tooLarge = getattr(request, "tooLarge", False)
        return respond(request, self._tooLarge if tooLarge else self._notFound)


class Root(Resource):
    """
    The top of the tree; its children are the routes the daemon composes
    (L{socktopus_tw.http.fastpath.FastPathSite.route}). Any other path is a
    JSON 404.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        return NotFoundResource()
