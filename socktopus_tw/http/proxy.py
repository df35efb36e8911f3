# -*- test-case-name: tests.http.test_proxy -*-
"""
Who the client is. The daemon is deployed behind nginx on the same machine
(C{nginx.conf}), which names the real client in C{X-Real-IP}; only such a
local proxy is believed, since anyone can send the header.
"""

from __future__ import annotations

from twisted.web.server import Request

_LOOPBACK = {"127.0.0.1", "::1"}


def clientAddress(request: Request) -> str | None:
    """
    The client's IP address. Behind a reverse proxy on the same machine
    (loopback or a unix socket) that is the proxy's C{X-Real-IP}; from
    anywhere else the header is ignored.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    if host is None or host in _LOOPBACK:
        forwarded = request.getHeader(b"x-real-ip")
        if forwarded:
            return forwarded.decode("ascii", "replace").strip()[:64]
    return host
