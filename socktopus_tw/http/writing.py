# -*- test-case-name: tests.http.test_writing -*-
"""
Writing to plain TCP connections cheaply: relay frames and HTTP responses.

Twisted's C{transport.write} on an idle connection queues the data, asks
epoll to watch the socket for writability, sends on the next reactor pass
and stops watching: three system calls and a dispatch per message. When
nothing is queued, L{writeNow} sends at once, as Go's net package does, and
leaves anything the kernel did not take to the normal buffered path.

It relies on attributes of Twisted's POSIX TCP connections that are not
public API (C{socket}, C{dataBuffer}, C{_tempDataLen}). L{canWriteNow} checks
them once per transport class, so if a Twisted release changes them this
degrades to plain C{transport.write}, never to an error. TLS transports are
never written to directly: their bytes must go through OpenSSL.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet import tcp

_checked: dict[type, bool] = {}


def canWriteNow(transport: Any) -> bool:
    """
    Whether L{writeNow} may bypass C{transport}'s buffer: a plain (not TLS)
    Twisted TCP connection that looks the way this module expects.
    """
    kind = type(transport)
    verdict = _checked.get(kind)
    if verdict is None:
        verdict = isinstance(transport, tcp.Connection) and all(
            hasattr(transport, name)
            for name in (
                "socket",
                "dataBuffer",
                "_tempDataLen",
                "connected",
                "disconnecting",
                "TLS",
            )
        )
        _checked[kind] = verdict
    return verdict and not transport.TLS


def writeNow(transport: Any, data: bytes) -> None:
    """
    Send C{data} on C{transport} now if nothing is queued before it; queue
    what the kernel does not take (or everything, when it cannot be sent
    directly) through C{transport.write}, so order and back-pressure are kept.

    Only for transports L{canWriteNow} accepted: callers check once per
    connection, not per message.
    """
    if (
        transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # A reset or broken pipe: the normal path reports it the normal
            # way, through connectionLost.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def writerFor(transport: Any) -> Callable[[bytes], None]:
    """
    The cheapest correct way to write to C{transport}, decided once per
    connection: L{writeNow} where L{canWriteNow} allows, else its own write.
    """
    if canWriteNow(transport):
        return partial(writeNow, transport)
    return transport.write
