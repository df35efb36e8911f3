"""
Load generator processes for bench/run.py: lean asyncio clients on raw
sockets, so the generator is not what the benchmark measures.

    python bench/loadgen.py receive PORT APP SECRET FIRST COUNT [STEP]
    python bench/loadgen.py send PORT APP SECRET SENDERS RECIPIENTS BATCH SIZE SECONDS [RATE]
    python bench/loadgen.py ping PORT APP SECRET SECONDS INTERVAL
    python bench/loadgen.py login PORT APP SECRET SECONDS
    python bench/loadgen.py connect PORT APP SECRET SOURCE FIRST COUNT PARALLEL TRIES SECONDS

Each prints {"result": PATH} on stdout when done, PATH a JSON file the caller
reads and removes ("ready" lines first for receivers). Receivers and
connectors run until SIGTERM, then report.

A receiver holds the ids rFIRST, rFIRST+STEP, ... (COUNT of them; STEP 1
unless given), so two nodes can hold interleaved ids; on SIGUSR1 each of its
clients sends PING, which keeps it alive on a server that only counts
messages (the Go original closes a client 20 s after its last PING). A
sender without RATE runs closed loops as fast as the daemon answers; with
RATE (messages per second, over all its loops) each loop paces its requests
to its share. A connector (see connect()) starts on SIGUSR1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import os
import random
import re
import resource
import select
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, deque

from socktopus_tw.relay.tokens import makeToken

SAMPLE = 20000  # latency samples kept per process (reservoir)
IP_BIND_ADDRESS_NO_PORT = 24  # from linux/in.h; the socket module does not name it


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


def masked(opcode: int, payload: bytes) -> bytes:
    """
    A client frame (FIN set) of a short PAYLOAD. Client frames must be
    masked; a zero mask keeps the payload as is.
    """
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def maskedText(payload: bytes) -> bytes:
    return masked(0x1, payload)


def splitFrames(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """
    The whole server (unmasked) frames at the start of BUFFER, as (opcode,
    payload), and the bytes of the one not whole yet.
    """
    frames = []
    position, size = 0, len(buffer)
    while size - position >= 2:
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
        frames.append((buffer[position] & 0x0F, buffer[start : start + length]))
        position = start + length
    return frames, buffer[position:]


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
        frames, self.buffer = splitFrames(buffer)
        for opcode, payload in frames:
            if opcode == 1:
                if payload.startswith(b"DATA:"):
                    self.stats["received"] += 1
                    stamp = payload[5:24]
                    if stamp.isdigit():
                        self.latencies.add(now - int(stamp))
                elif payload == b"PONG" and self.pongs is not None:
                    self.pongs.put_nowait(now)
            elif opcode == 9:  # a server ping: answer, as a browser would
                self.transport.write(masked(0xA, payload))
            elif opcode == 8 and len(payload) >= 2:
                self.stats["close_code"] = int.from_bytes(payload[:2], "big")

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
    Read one HTTP response, its body by Content-Length or chunked (the Go
    original chunks answers over 4 KiB); anything but 200 is an error.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode("latin-1"))
    lowered = head.lower()
    if b"content-length:" in lowered:
        length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
        return await reader.readexactly(length)
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")  # no trailers: the empty line after the last chunk
    return b"".join(chunks)


async def receive(port: int, app: str, secret: str, first: int, count: int, step: int = 1) -> dict:
    stats = {"received": 0, "closed": 0}
    latencies = Reservoir()
    ids = [f"r{n}" for n in range(first, first + count * step, step)]
    connections = await openConnections(port, app, secret, ids, stats, latencies)
    loop = asyncio.get_running_loop()
    ping = maskedText(b"PING")
    loop.add_signal_handler(signal.SIGUSR1, lambda: [c.transport.write(ping) for c in connections])
    print(json.dumps({"ready": count}), flush=True)
    stop = asyncio.Event()
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


async def ping(
    port: int, app: str, secret: str, seconds: float, interval: float, patience: float = 5.0
) -> dict:
    """
    One client sending PING every INTERVAL seconds (under the daemon's
    --client-message-rate, which closes a faster client with 1008) and
    timing each PONG. A PONG that has not come after PATIENCE seconds ends
    it, with the reason in "failure".
    """
    loop = asyncio.get_running_loop()
    pongs: asyncio.Queue = asyncio.Queue()
    opened = loop.create_future()
    stats = {"received": 0, "closed": 0}
    request = handshake(port, makeToken(app, secret, "pinger", int(time.time() * 1000)))
    await loop.create_connection(
        lambda: Receiver(stats, Reservoir(), opened, request, pongs), "127.0.0.1", port
    )
    connection = await opened
    delays = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sentAt = time.time_ns()
        connection.transport.write(maskedText(b"PING"))
        try:
            delays.append(await asyncio.wait_for(pongs.get(), patience) - sentAt)
        except TimeoutError:
            closed = "closed" if stats["closed"] else "still open"
            code = stats.get("close_code")
            return {
                "delays": delays,
                "failure": f"no PONG within {patience:g} s after {len(delays)} PINGs "
                f"(connection {closed}" + (f", close code {code})" if code else ")"),
            }
        await asyncio.sleep(interval)
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
            await asyncio.wait_for(readOk(reader), seconds + 30)
            count += 1
        writer.close()
        return count

    try:
        counts = await asyncio.gather(*(loop() for _ in range(concurrency)))
    except TimeoutError:
        return {
            "logins": 0,
            "seconds": time.monotonic() - started,
            "cpu": cpuSeconds() - mark,
            "failure": f"a login had no answer within {seconds + 30:g} s",
        }
    return {
        "logins": sum(counts),
        "seconds": time.monotonic() - started,
        "cpu": cpuSeconds() - mark,
    }


class Attempt:
    """
    One client's try at connecting (see Connector): its socket, the
    handshake request with the token it was given as it started, and the
    answer read so far.
    """

    __slots__ = ("answer", "arrived", "connectionId", "request", "socket", "started", "tries")

    def __init__(
        self, source: str, connectionId: str, tries: int, arrived: float | None, request: bytes
    ) -> None:
        """
        SOURCE: the loopback address it connects from; ARRIVED: when the
        client first tried (None: it does now).
        """
        self.socket = socket.socket()
        self.socket.setblocking(False)
        # The port is picked at connect(), for the source and the
        # destination together: not from the ports every connection in use
        # on the machine holds, whose search costs the kernel more and more.
        self.socket.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        self.socket.bind((source, 0))
        self.connectionId, self.tries, self.request = connectionId, tries, request
        self.started, self.answer = time.monotonic(), b""
        self.arrived = arrived or self.started


class Connector:
    """
    COUNT WebSocket clients (ids cFIRST, cFIRST+1, ...) from the loopback
    address SOURCE to 127.0.0.1:PORT, PARALLEL of them
    connecting at a time (0: all at once, as after a restart), each with a
    token stamped as it starts, as a backend mints one just before its
    client connects. A client refused (its token expired on the way, or
    anything else) starts again with a fresh token, up to TRIES tries.

    Plain non-blocking sockets under one epoll, so one process costs little
    and several can outpace a daemon; connected clients are held, their
    server's pings answered, and a close counted as dropped.
    """

    def __init__(
        self,
        source: str,
        port: int,
        app: str,
        secret: str,
        first: int,
        count: int,
        parallel: int,
        tries: int,
    ) -> None:
        self.source, self.port, self.app, self.secret = source, port, app, secret
        self.parallel, self.tries = parallel, tries
        self.poll = select.epoll()
        self.ids = [f"c{n}" for n in range(first, first + count)]
        # (connection id, tries so far, when it first tried, if it has)
        self.waiting: deque[tuple[str, int, float | None]] = deque()
        self.attempts: dict[int, Attempt] = {}
        self.held: dict[int, list] = {}  # fd -> [socket, bytes of a frame not whole yet]
        self.counts = Counter(connected=0, expired=0, failed=0, gave_up=0, unfinished=0, dropped=0)
        self.refusals: Counter = Counter()  # why the failed attempts failed
        self.handshakes: list[float] = []  # ms, of the attempts that connected
        self.waits: list[float] = []  # ms, from a connected client's first try
        self.started = self.lastConnected = self.cpu = 0.0

    def run(self, seconds: float, stopping: list) -> None:
        """
        Connect every client (for SECONDS at most), print {"done"}, then
        hold them until STOPPING is not empty. Its CPU is counted up to {"done"}.
        """
        mark, self.started = cpuSeconds(), time.monotonic()
        self.waiting.extend((connectionId, 0, None) for connectionId in self.ids)
        deadline, done = self.started + seconds, False
        while not stopping:
            if not done:
                while self.waiting and (not self.parallel or len(self.attempts) < self.parallel):
                    self.begin(*self.waiting.popleft())
                if not (self.waiting or self.attempts) or time.monotonic() > deadline:
                    # Out of time: what is still trying stops, unfinished.
                    self.counts["unfinished"] = len(self.waiting) + len(self.attempts)
                    self.waiting.clear()
                    for attempt in self.attempts.values():
                        attempt.socket.close()  # which takes it out of the epoll too
                    self.attempts.clear()
                    done, self.cpu = True, cpuSeconds() - mark
                    print(json.dumps({"done": self.counts["connected"]}), flush=True)
            for fd, events in self.poll.poll(0.05):
                if fd in self.held:
                    self.keep(fd)
                elif fd in self.attempts:
                    self.advance(fd, events)
        for peer, _ in self.held.values():
            peer.close()

    def begin(self, connectionId: str, tried: int, arrived: float | None) -> None:
        stamp = time.time_ns() // 1_000_000
        request = handshake(self.port, makeToken(self.app, self.secret, connectionId, stamp))
        attempt = Attempt(self.source, connectionId, tried + 1, arrived, request)
        fd = attempt.socket.fileno()
        self.attempts[fd] = attempt
        code = attempt.socket.connect_ex(("127.0.0.1", self.port))
        if code in (0, errno.EINPROGRESS):
            self.poll.register(fd, select.EPOLLOUT)
        else:
            self.refuse(fd, "failed", errno.errorcode.get(code, str(code)))

    def refuse(self, fd: int, outcome: str, reason: str = "") -> None:
        """
        End an attempt that did not connect; its client tries again if it may.
        """
        attempt = self.attempts.pop(fd)
        with contextlib.suppress(FileNotFoundError):
            self.poll.unregister(fd)
        attempt.socket.close()
        self.counts[outcome] += 1
        if reason:
            self.refusals[reason] += 1
        if attempt.tries < self.tries:
            self.waiting.append((attempt.connectionId, attempt.tries, attempt.arrived))
        else:
            self.counts["gave_up"] += 1

    def advance(self, fd: int, events: int) -> None:
        """
        An attempt's socket is ready: send its request once connected, then
        read the answer: a 101 holds it; a refusal, once whole, ends it.
        """
        attempt = self.attempts[fd]
        if events & select.EPOLLOUT:
            error = attempt.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.refuse(fd, "failed", errno.errorcode.get(error, str(error)))
            else:
                attempt.socket.send(attempt.request)  # a few hundred bytes: never short
                self.poll.modify(fd, select.EPOLLIN)
            return
        try:
            data = attempt.socket.recv(4096)
        except OSError as e:
            self.refuse(fd, "failed", errno.errorcode.get(e.errno, str(e.errno)))
            return
        answer = attempt.answer = attempt.answer + data
        end = answer.find(b"\r\n\r\n")
        if end >= 0 and answer.startswith(b"HTTP/1.1 101"):
            now = self.lastConnected = time.monotonic()
            del self.attempts[fd]
            self.held[fd] = [attempt.socket, answer[end + 4 :]]
            self.counts["connected"] += 1
            self.handshakes.append((now - attempt.started) * 1000)
            self.waits.append((now - attempt.arrived) * 1000)
            return
        # A refusal's JSON body says why: whole once its Content-Length is
        # read, or when the server closes.
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer[:end])
        if data and not (end >= 0 and length and len(answer) >= end + 4 + int(length[1])):
            return
        if b"Token expired" in answer:
            self.refuse(fd, "expired")
        else:
            self.refuse(fd, "failed", answer[9:12].decode("latin-1") if answer else "closed")

    def keep(self, fd: int) -> None:
        """
        A held connection's bytes: answer pings; a close (or CLOSE) counts as dropped.
        """
        peer, rest = self.held[fd]
        try:
            data = peer.recv(4096)
        except OSError:
            data = b""
        frames, self.held[fd][1] = splitFrames(rest + data)
        if data and not any(op == 8 or payload == b"CLOSE" for op, payload in frames):
            for opcode, payload in frames:
                if opcode == 9:
                    peer.send(masked(0xA, payload))
            return
        self.poll.unregister(fd)
        self.held.pop(fd)[0].close()
        self.counts["dropped"] += 1

    def report(self) -> dict:
        return {
            **self.counts,
            "refusals": dict(self.refusals),
            "handshake_ms": self.handshakes,
            "wait_ms": self.waits,
            "started": self.started,
            "last_connected": self.lastConnected,
            "cpu": self.cpu,
        }


def connect(port: int, app: str, secret: str, source: str, *arguments: int, seconds: float) -> dict:
    """
    A Connector (FIRST COUNT PARALLEL TRIES in ARGUMENTS), set up, says
    {"armed"} and waits for SIGUSR1; it prints {"done"} once every client
    is connected or has given up (or SECONDS have passed), and holds them
    until SIGTERM.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    connector = Connector(source, port, app, secret, *arguments)
    print(json.dumps({"armed": len(connector.ids)}), flush=True)
    # Not started in a quarter of an hour (bench/run.py waits 10 minutes
    # at most for a quiet machine): its caller is gone.
    woken = signal.sigtimedwait({signal.SIGUSR1, signal.SIGTERM}, 900)
    if woken is None or woken.si_signo != signal.SIGUSR1:
        raise SystemExit("stopped before it started")
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    connector.run(seconds, stopping)
    return connector.report()


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
        result = asyncio.run(ping(port, app, secret, *map(float, rest[:2])))
    elif role == "connect":
        result = connect(port, app, secret, rest[0], *map(int, rest[1:5]), seconds=float(rest[5]))
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
