# -*- test-case-name: tests.relay.test_slices,tests.http.test_hostile_requests -*-
"""
JSON for big backend requests, a slice at a time.

A 16 MiB C{/send} holds over 100,000 messages. Any JSON library that builds
Python objects holds the GIL while it does, so decoding such a body in a
thread stalls the reactor just as long as decoding it in place (~80 ms
here). These generators do the work in slices instead and yield between
them, for a L{twisted.internet.task.Cooperator} to spread over reactor
turns: the one big array of a request is decoded an element at a time with
the standard library's C scanner, and an answer's lists are encoded a slice
at a time with orjson.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from math import isfinite
from typing import Any, NoReturn

import orjson

from socktopus_tw.errors import MalformedRequest

_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _refuseConstant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finiteFloat(text: str) -> float:
    value = float(text)
    if not isfinite(value):
        raise ValueError("number out of range")
    return value


def _checkText(value: Any) -> None:
    """
    Refuse a lone surrogate anywhere in C{value}, as orjson does.
    """
    if type(value) is str:
        value.encode("utf-8")  # UnicodeEncodeError is a ValueError
    elif type(value) is list:
        for item in value:
            _checkText(item)
    elif type(value) is dict:
        for key, item in value.items():
            _checkText(key)
            _checkText(item)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        # A repeated key: the last value is kept (as orjson keeps it) and
        # checked by the caller; the ones dropped are checked here, since
        # orjson refuses the whole body for any of them.
        for key, item in pairs:
            if value[key] is not item:
                _checkText(item)
    return value


#: The standard library's decoder, refusing what orjson refuses that it would
#: accept: NaN, Infinity, numbers beyond a float, and (in values a repeated
#: key drops) lone surrogates.
_decode = json.JSONDecoder(
    parse_constant=_refuseConstant, parse_float=_finiteFloat, object_pairs_hook=_object
).raw_decode


_STRING = r'"(?:[^"\\]++|\\.)*+"'
_SPACE = r"[ \t\n\r]*+"
_PAIR = _STRING + _SPACE + ":" + _SPACE + _STRING + _SPACE
#: The extent of an object whose values are all strings, found before it is
#: decoded (by the scanner, which checks the rest).
_FLAT_OBJECT = re.compile(r"\{" + _SPACE + "(?:" + _PAIR + "(?:," + _SPACE + _PAIR + ")*+)?\\}")


#: The same, in the bytes of a body, for finding extents before decoding.
_BYTES_SPACE = re.compile(rb"[ \t\n\r]*+")
_BYTES_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
#: What an array of strings and flat objects holds up to its end: runs of
#: anything but quotes and brackets, and whole strings. It stops at a
#: bracket (the end, or a nested array: refused) or at a string that does
#: not end within the window matched.
_ARRAY_RUN = re.compile(rb'(?:[^"\[\]]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
#: A key longer than this is no field name, however it is escaped.
_MAX_KEY = 128


def credentialsInSlices(
    body: bytes, fields: set[str], arrayField: str, window: int
) -> Generator[None, None, dict[str, str]]:
    """
    The string fields of a backend request (its credentials: all of
    C{fields} but C{arrayField}), read from the bytes of C{body} before
    anything else is decoded, so a request whose credentials are wrong is
    refused for the cost of finding them.

    They may come anywhere in the object: an C{arrayField} before them is
    skipped, not decoded, C{window} bytes per step (a regular expression
    over its strings and punctuation, which builds no object), yielding
    between steps. Reading stops once every credential is found: one
    repeated after that is the decoded request's (the last counts), so the
    caller authenticates the decoded request again.

    What cannot be such a request, as far as it is read, is refused with
    L{MalformedRequest}: the same answer L{decodeInSlices} would give.
    """
    wanted = fields - {arrayField}
    found: dict[str, str] = {}
    try:
        skip = _BYTES_SPACE.match
        position = skip(body).end()
        if body[position : position + 1] != b"{":
            raise MalformedRequest()
        position = skip(body, position + 1).end()
        while found.keys() != wanted:
            if body[position : position + 1] != b'"':
                raise MalformedRequest()  # no key: "}" before every credential
            key = _BYTES_STRING.match(body, position, position + _MAX_KEY)
            if key is None:
                raise MalformedRequest()
            name = json.loads(key[0])
            if name not in fields:
                raise MalformedRequest()
            position = skip(body, key.end()).end()
            if body[position : position + 1] != b":":
                raise MalformedRequest()
            position = skip(body, position + 1).end()
            start = body[position : position + 1]
            if name == arrayField and start == b"[":
                position = yield from _skipArray(body, position + 1, window)
            elif name != arrayField and start == b'"':
                value = _BYTES_STRING.match(body, position)
                if value is None:
                    raise MalformedRequest()
                found[name] = json.loads(value[0])
                position = value.end()
            else:
                raise MalformedRequest()
            position = skip(body, position).end()
            separator = body[position : position + 1]
            position = skip(body, position + 1).end()
            if separator == b"}":
                if found.keys() != wanted:
                    raise MalformedRequest()
                break
            if separator != b",":
                raise MalformedRequest()
    except ValueError:
        # A key or credential that is not JSON text (bad escapes, control
        # characters, bad UTF-8: all ValueErrors).
        raise MalformedRequest() from None
    return found


def _skipArray(body: bytes, position: int, window: int) -> Generator[None, None, int]:
    """
    The position after the array whose first element starts at or after
    C{body[position]}, found C{window} bytes at a time.
    """
    run = _ARRAY_RUN.match
    while True:
        end = min(position + window, len(body))
        position = run(body, position, end).end()
        if position == end:
            if end == len(body):
                raise MalformedRequest()  # no end
        else:
            stop = body[position : position + 1]
            if stop == b"]":
                return position + 1
            if stop == b"[":
                raise MalformedRequest()  # a nested array
            # A string that goes on past the window: found whole.
            string = _BYTES_STRING.match(body, position)
            if string is None:
                raise MalformedRequest()
            position = string.end()
        yield None


def decodeInSlices(
    body: bytes, fields: set[str], arrayField: str, step: int
) -> Generator[None, None, dict[str, Any]]:
    """
    Decode a backend request, yielding after every C{step} elements of its
    C{arrayField}; return it as an object.

    The request must be what /send and /kick accept: an object of C{fields},
    strings but for C{arrayField}, a list of strings or of objects of
    strings. Anything else is refused, with L{MalformedRequest}, before its
    value is decoded, so no part of a hostile body costs more than a slice
    (or one string) to look at. Within that shape it refuses what
    C{orjson.loads} refuses, except a lone surrogate escaped as
    C{"\\\\ud800"} in a string it returns: the caller checks those, with their
    types and lengths.
    """
    try:
        text = body.decode("utf-8")
        value: dict[str, Any] = {}
        skip = _WHITESPACE.match
        position = skip(text, 0).end()
        if text[position : position + 1] != "{":
            raise MalformedRequest()
        position = skip(text, position + 1).end()
        if text[position : position + 1] == "}":
            position += 1
        else:
            while True:
                if text[position : position + 1] != '"':
                    raise MalformedRequest()
                key, position = _decode(text, position)
                if key not in fields:
                    raise MalformedRequest()
                position = skip(text, position).end()
                if text[position : position + 1] != ":":
                    raise MalformedRequest()
                position = skip(text, position + 1).end()
                if key in value:
                    _checkText(value[key])  # dropped for the repeated key
                start = text[position : position + 1]
                if key != arrayField and start == '"':
                    value[key], position = _decode(text, position)
                elif key == arrayField and start == "[":
                    value[key], position = yield from _array(text, position, step)
                else:
                    raise MalformedRequest()
                position = skip(text, position).end()
                separator = text[position : position + 1]
                position = skip(text, position + 1).end()
                if separator == "}":
                    break
                if separator != ",":
                    raise MalformedRequest()
        if skip(text, position).end() != len(text):
            raise MalformedRequest()  # something after the object
    except (ValueError, RecursionError):
        # Bad JSON, bad UTF-8 (both ValueErrors), or a hostile nesting depth.
        raise MalformedRequest() from None
    return value


def _array(text: str, position: int, step: int) -> Generator[None, None, tuple[list[Any], int]]:
    """
    The list of strings or flat objects starting at C{text[position]}, a
    C{"["}, and the position after it; yields every C{step} elements.
    """
    skip = _WHITESPACE.match
    items: list[Any] = []
    position = skip(text, position + 1).end()
    if text[position : position + 1] == "]":
        return items, position + 1
    while True:
        start = text[position : position + 1]
        if start == "{":
            if _FLAT_OBJECT.match(text, position) is None:
                raise MalformedRequest()
        elif start != '"':
            raise MalformedRequest()
        item, position = _decode(text, position)
        items.append(item)
        position = skip(text, position).end()
        separator = text[position : position + 1]
        position = skip(text, position + 1).end()
        if separator == "]":
            return items, position
        if separator != ",":
            raise MalformedRequest()
        if len(items) % step == 0:
            yield None


def encodeInSlices(value: dict[str, list[Any]], step: int) -> Generator[None, None, bytes]:
    """
    Encode an object of lists, as C{orjson.dumps(value)} would, yielding
    after every C{step} elements; return the bytes.
    """
    parts = [b"{"]
    for index, (key, items) in enumerate(value.items()):
        parts.append(b"%s%s:[" % (b"," if index else b"", orjson.dumps(key)))
        for start in range(0, len(items), step):
            if start:
                parts.append(b",")
            # A list's encoding without its brackets: its elements, comma-separated.
            parts.append(orjson.dumps(items[start : start + step])[1:-1])
            yield None
        parts.append(b"]")
    parts.append(b"}")
    return b"".join(parts)
