"""
The cost of the Python part of /send, without the kernel or twisted.web:
decode a 100-message request, deliver it to 1,000 registered connections
whose transports drop what they are given, encode the answer.

    .venv/bin/python bench/pathcost.py               # microseconds per message
    .venv/bin/python bench/pathcost.py --callgrind   # instructions per message
    .venv/bin/python bench/pathcost.py --http        # per single-message HTTP request,
                                                     # as the daemon's site serves it
    .venv/bin/python bench/pathcost.py --http --web  # the same through twisted.web
    .venv/bin/python bench/pathcost.py --connect     # per WebSocket connect and close,
                                                     # through the daemon's site

Timings on a shared 2-core VM vary by a third from run to run; valgrind's
instruction count (Debian's valgrind) does not, so use --callgrind to judge
a change to the hot path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

REQUESTS = int(os.environ.get("PATHCOST_REQUESTS", "3000"))
HTTP = bool(os.environ.get("PATHCOST_HTTP"))
CONNECT = bool(os.environ.get("PATHCOST_CONNECT"))
BATCH = 1 if HTTP or CONNECT else 100
UNIT = "connect" if CONNECT else "request" if HTTP else "message"


def connects():
    """
    One WebSocket connect and close: the upgrade read by the daemon's site
    from bytes (token checked, handshake answered, connection registered,
    its line logged by the systemd unit's observer), then the client gone.
    """
    from twisted.internet import task
    from twisted.internet.error import ConnectionLost
    from twisted.internet.testing import StringTransport
    from twisted.logger import globalLogBeginner
    from twisted.python.failure import Failure
    from twisted.web.resource import Resource

    from socktopus_tw.apps import Apps
    from socktopus_tw.http.fastpath import FastPathSite
    from socktopus_tw.logs import BatchingTextObserver
    from socktopus_tw.relay.admission import Gatekeeper
    from socktopus_tw.relay.registry import LocalRegistry
    from socktopus_tw.relay.tokens import makeToken
    from socktopus_tw.relay.upgrade import ReceiveResource
    from socktopus_tw.relay.websocket import RelayFactory

    class Running(task.Clock):
        running = True

        def addSystemEventTrigger(self, *args: object) -> None:
            pass

    clock = Running()
    clock.advance(1_700_000_000)
    globalLogBeginner.beginLoggingTo(
        [BatchingTextObserver(open(os.devnull, "w"), clock)], redirectStandardIO=False
    )
    apps = Apps({"bench": "secret"})
    registry = LocalRegistry(clock)
    site = FastPathSite(Resource())
    site.route(
        b"recieve", ReceiveResource(Gatekeeper(apps, registry, clock), RelayFactory(registry))
    )
    site.reactor = clock
    now = int(clock.seconds() * 1000)
    requests = [
        b"GET /recieve?token=%s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        % makeToken("bench", "secret", f"c{n}", now).encode()
        for n in range(1000)
    ]
    gone = Failure(ConnectionLost("the client went away"))
    turn = iter(range(1 << 62))

    def connect() -> None:
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(requests[next(turn) % 1000])
        transport.protocol.connectionLost(gone)
        clock.advance(0)  # the observer's flush, once per "reactor turn"

    return connect


def build():
    if CONNECT:
        return connects()

    from autobahn.websocket.protocol import WebSocketProtocol
    from twisted.internet import task
    from twisted.internet.testing import StringTransport

    from socktopus_tw.apps import Apps
    from socktopus_tw.http.respond import encodeJson
    from socktopus_tw.metrics import Metrics
    from socktopus_tw.relay.api import SendResource, decodeRequest
    from socktopus_tw.relay.registry import LocalRegistry
    from socktopus_tw.relay.websocket import RelayFactory

    class Sink(StringTransport):
        def write(self, data: bytes) -> None:
            pass

    clock = task.Clock()
    metrics = Metrics()
    registry = LocalRegistry(clock, metrics=metrics)
    factory = RelayFactory(registry)
    for n in range(1000):
        protocol = factory.buildProtocol(None)
        protocol.app, protocol.connectionId = "bench", f"r{n}"
        protocol.transport = Sink()
        protocol.state = WebSocketProtocol.STATE_OPEN
        registry._apps.setdefault("bench", {})[protocol.connectionId] = protocol
    send = SendResource(Apps({"bench": "secret"}), registry, clock, metrics=metrics)
    body = json.dumps(
        {
            "secretName": "bench",
            "secret": "secret",
            "messages": [
                {"recipient": f"r{n % 1000}", "content": f"{n:019d};" + "x" * 44}
                for n in range(BATCH)
            ],
        }
    ).encode()

    def one() -> bytes:
        return encodeJson(send.handle(decodeRequest(body, send.fields)))

    if not HTTP:
        return one

    # The whole request: one message per request, parsed from bytes by the
    # daemon's own site (its fast path; twisted.web with --web), answered into
    # a transport, its log line formatted by the systemd unit's observer.
    from twisted.logger import globalLogBeginner
    from twisted.web.resource import Resource

    from socktopus_tw.http.fastpath import FastPathSite
    from socktopus_tw.logs import BatchingTextObserver

    class Running(task.Clock):
        running = True

        def addSystemEventTrigger(self, *args: object) -> None:
            pass

    loop = Running()
    observer = BatchingTextObserver(open(os.devnull, "w"), loop)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    site = FastPathSite(Resource(), metrics=metrics)
    if os.environ.get("PATHCOST_WEB"):
        site.resource.putChild(b"send", send)
    else:
        site.route(b"send", send)
    site.reactor = clock
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    single = json.dumps(
        {
            "secretName": "bench",
            "secret": "secret",
            "messages": [{"recipient": "r1", "content": "x" * 64}],
        }
    ).encode()
    request = (
        b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(single) + single
    )

    def http() -> None:
        channel.dataReceived(request)
        transport.clear()
        loop.advance(0)  # the observer's flush, once per "reactor turn"

    return http


def callgrind() -> None:
    counts = []
    # The difference between two runs, so start-up and first-call costs
    # (imports, caches filled once) cancel out.
    for requests in (100, 300):
        output = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
            ],
            env=dict(os.environ, PATHCOST_REQUESTS=str(requests), PYTHONHASHSEED="0"),
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        counts.append(int(re.search(r"Collected : (\d+)", output).group(1)))
    print(f"{(counts[1] - counts[0]) // (200 * BATCH)} instructions per {UNIT}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--web", action="store_true", help="with --http: no fast path")
    parser.add_argument("--connect", action="store_true")
    options = parser.parse_args()
    if options.connect and not CONNECT:
        os.environ["PATHCOST_CONNECT"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if options.http and not HTTP:
        os.environ["PATHCOST_HTTP"] = "1"
        if options.web:
            os.environ["PATHCOST_WEB"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if options.callgrind:
        callgrind()
        return
    one = build()
    started = time.process_time()
    for _ in range(REQUESTS):
        one()
    if REQUESTS:
        elapsed = time.process_time() - started
        print(f"{elapsed / REQUESTS / BATCH * 1e6:.2f} microseconds per {UNIT}")


if __name__ == "__main__":
    main()
