"""
Load generator processes for bench/run.py: lean asyncio clients on raw
sockets, so the generator is not what the benchmark measures.

    python bench/loadgen.py receive PORT APP SECRET FIRST COUNT [STEP]
    python bench/loadgen.py send PORT APP SECRET SENDERS RECIPIENTS BATCH SIZE SECONDS [RATE]
    python bench/loadgen.py ping PORT APP SECRET SECONDS
    python bench/loadgen.py login PORT APP SECRET SECONDS

Each prints {"result": PATH} on stdout when done, PATH a JSON file the caller
reads and removes ("ready" lines first for receivers). Receivers run until
SIGTERM, then report.

A receiver holds the ids rFIRST, rFIRST+STEP, ... (COUNT of them; STEP 1
unless given), so two nodes can hold interleaved ids. A sender without RATE
runs closed loops as fast as the daemon answers; with RATE (messages per
second, over all its loops) each loop paces its requests to its share.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time

from socktopus_tw.relay.tokens import makeToken

SAMPLE = 20000  # latency samples kept per process (reservoir)


def cpuSeconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Reservoir:
    def __init__(self) -> None:
        self.samples: list[int] = []
        self.seen = 0

    def add(self, value: int) -> None:
        self.seen += 1
        if len(self.samples) < SAMPLE:
            self.samples.append(value)
        else:
            slot = random.randrange(self.seen)
            if slot < SAMPLE:
                self.samples[slot] = value


def handshake(port: int, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /recieve?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def maskedText(payload: bytes) -> bytes:
    # Client frames must be masked; a zero mask keeps the payload as is.
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class Receiver(asyncio.Protocol):
    """
    One WebSocket client: counts DATA frames and samples their latency from
    the nanosecond stamp at the start of each content.
    """

    def __init__(
        self,
        stats: dict,
        latencies: Reservoir,
        opened: asyncio.Future,
        request: bytes,
        pongs: asyncio.Queue | None = None,
    ) -> None:
        self.stats = stats
        self.latencies = latencies
        self.opened = opened
        self.request = request
        self.buffer = b""
        self.upgraded = False
        self.pongs = pongs

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(buffer[:200].decode("latin-1")))
                self.transport.close()
                return
            self.upgraded = True
            self.opened.set_result(self)
            buffer = buffer[end + 4 :]
        now = time.time_ns()
        position, size = 0, len(buffer)
        while size - position >= 2:
            opcode = buffer[position] & 0x0F
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if size - start < length:
                break
            payload = buffer[start : start + length]
            position = start + length
            if opcode == 1:
                if payload.startswith(b"DATA:"):
                    self.stats["received"] += 1
                    stamp = payload[5:24]
                    if stamp.isdigit():
                        self.latencies.add(now - int(stamp))
                elif payload == b"PONG" and self.pongs is not None:
                    self.pongs.put_nowait(now)
            elif opcode == 9:  # a server ping: answer, as a browser would
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        self.buffer = buffer[position:]

    def connection_lost(self, exc) -> None:
        self.stats["closed"] += 1
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))


async def openConnections(
    port: int,
    app: str,
    secret: str,
    ids: list[str],
    stats: dict,
    latencies: Reservoir,
    parallel: int = 200,
) -> list:
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(parallel)
    connections = []

    async def one(connectionId: str) -> None:
        async with semaphore:
            opened = loop.create_future()
            request = handshake(port, makeToken(app, secret, connectionId, int(time.time() * 1000)))
            await loop.create_connection(
                lambda: Receiver(stats, latencies, opened, request), "127.0.0.1", port
            )
            connections.append(await opened)

    await asyncio.gather(*(one(i) for i in ids))
    return connections


async def readOk(reader: asyncio.StreamReader) -> bytes:
    """
    Read one HTTP response with a Content-Length; anything but 200 is an error.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode("latin-1"))
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def receive(port: int, app: str, secret: str, first: int, count: int, step: int = 1) -> dict:
    stats = {"received": 0, "closed": 0}
    latencies = Reservoir()
    ids = [f"r{n}" for n in range(first, first + count * step, step)]
    await openConnections(port, app, secret, ids, stats, latencies)
    print(json.dumps({"ready": count}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    mark = cpuSeconds()
    await stop.wait()
    return {
        "received": stats["received"],
        "closed": stats["closed"],
        "latencies": latencies.samples,
        "cpu": cpuSeconds() - mark,
    }


async def send(
    port: int,
    app: str,
    secret: str,
    senders: int,
    recipients: int,
    batch: int,
    size: int,
    seconds: float,
    rate: float | None = None,
) -> dict:
    """
    SENDERS concurrent loops of /send requests, each on its own keep-alive
    connection and owning every SENDERS-th recipient: closed loops, or
    paced to RATE messages per second between them.
    """
    mark, started = cpuSeconds(), time.monotonic()
    share = rate / senders if rate else None
    results = await asyncio.gather(
        *(
            sendLoop(port, app, secret, sender, senders, recipients, batch, size, seconds, share)
            for sender in range(senders)
        )
    )
    return {
        "requests": sum(r[0] for r in results),
        "sent": sum(r[1] for r in results),
        "failed": sum(r[2] for r in results),
        "late": sum(r[3] for r in results),
        "seconds": time.monotonic() - started,
        "cpu": cpuSeconds() - mark,
    }


async def sendLoop(
    port: int,
    app: str,
    secret: str,
    sender: int,
    senders: int,
    recipients: int,
    batch: int,
    size: int,
    seconds: float,
    rate: float | None = None,
) -> tuple[int, int, int, int]:
    """
    One loop: (requests, messages sent, messages failed, requests that
    left later than their pace allowed by over a millisecond).
    """
    mine = [f"r{n}" for n in range(sender, recipients, senders)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    padding = "x" * max(0, size - 20)
    prefix = json.dumps({"secretName": app, "secret": secret})[:-1] + ',"messages":['
    requests = sent = failed = late = 0
    cursor = 0
    started = time.monotonic()
    deadline = started + seconds
    # Each request has its slot; a loop that falls behind sends at once
    # until it catches up, so the rate holds on average and "late" says
    # how often the daemon could not keep up.
    interval = batch / rate if rate else 0.0
    while time.monotonic() < deadline:
        if interval:
            due = started + requests * interval
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.001:
                late += 1
        stamp = f"{time.time_ns():019d};"
        parts = []
        for _ in range(batch):
            parts.append(f'{{"recipient":"{mine[cursor]}","content":"{stamp}{padding}"}}')
            cursor = (cursor + 1) % len(mine)
        body = (prefix + ",".join(parts) + "]}").encode()
        writer.write(
            b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        answer = await readOk(reader)
        # The answer lists "succeeded" then "failed"; counting in bytes keeps
        # the generator's cost per request at a few microseconds.
        if not answer.endswith(b'"failed":[]}'):
            failed += answer[answer.rfind(b'"failed":') :].count(b'"recipient"')
        requests += 1
        sent += batch
    writer.close()
    return requests, sent, failed, late


async def ping(port: int, app: str, secret: str, seconds: float) -> dict:
    """
    One client sending PING every 20 ms and timing each PONG.
    """
    loop = asyncio.get_running_loop()
    pongs: asyncio.Queue = asyncio.Queue()
    opened = loop.create_future()
    request = handshake(port, makeToken(app, secret, "pinger", int(time.time() * 1000)))
    await loop.create_connection(
        lambda: Receiver({"received": 0, "closed": 0}, Reservoir(), opened, request, pongs),
        "127.0.0.1",
        port,
    )
    connection = await opened
    delays = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sentAt = time.time_ns()
        connection.transport.write(maskedText(b"PING"))
        delays.append(await pongs.get() - sentAt)
        await asyncio.sleep(0.02)
    return {"delays": delays}


async def login(port: int, seconds: float, concurrency: int = 8) -> dict:
    """
    CONCURRENCY closed loops of POST /login for the user run.py registered.
    """
    body = json.dumps({"User": "bench", "Password": "benchmark password"}).encode()
    request = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    deadline = time.monotonic() + seconds
    mark, started = cpuSeconds(), time.monotonic()

    async def loop() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = 0
        while time.monotonic() < deadline:
            writer.write(request)
            await readOk(reader)
            count += 1
        writer.close()
        return count

    counts = await asyncio.gather(*(loop() for _ in range(concurrency)))
    return {
        "logins": sum(counts),
        "seconds": time.monotonic() - started,
        "cpu": cpuSeconds() - mark,
    }


def main() -> None:
    role, port, app, secret, *rest = sys.argv[1:]
    port = int(port)
    try:
        # uvloop (the "bench" extra) halves the generator's cost per callback,
        # so it stays out of the way of what is measured.
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if role == "receive":
        result = asyncio.run(receive(port, app, secret, *map(int, rest[:3])))
    elif role == "send":
        senders, recipients, batch, size = map(int, rest[:4])
        rate = float(rest[5]) if len(rest) > 5 else None
        result = asyncio.run(
            send(port, app, secret, senders, recipients, batch, size, float(rest[4]), rate)
        )
    elif role == "login":
        result = asyncio.run(login(port, float(rest[0])))
    elif role == "ping":
        result = asyncio.run(ping(port, app, secret, float(rest[0])))
    else:
        raise SystemExit(f"unknown role {role}")
    # The result (with its latency samples) can be larger than a pipe's
    # buffer, and an event loop may have left stdout non-blocking: hand it
    # over in a file, and only its name on stdout.
    descriptor, path = tempfile.mkstemp(prefix="socktopus-bench-", suffix=".json")
    with os.fdopen(descriptor, "w") as f:
        json.dump(result, f)
    print(json.dumps({"result": path}), flush=True)


if __name__ == "__main__":
    main()
