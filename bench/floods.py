"""
Hostile floods against the real daemon (issue 11): what one client can take
from everyone else, as figures.

    .venv/bin/python bench/floods.py [--seconds 5] [--only pings,text-ping,...]
                                     [--json bench/floods-results.json]
                                     [--logger socktopus_tw.logs.text]
                                     [--retries 0 --retry-wait 60] [--label NAME --append]

Each flood gets a fresh daemon (twistd -n, a subprocess, on a free loopback
port picked here, SQLite in a temporary directory), a "victim" WebSocket
client in its own process sending text PING every 100 ms (open loop) and
timing each PONG, and an attacker in another process:

    pings          never reads; sends masked WebSocket ping frames (125-byte
                   payload) as fast as the socket takes them
    text-ping      sends text PING frames as fast as it can, and reads
    big-bodies     8 concurrent POST /send of 15.7 MiB with a wrong secret,
                   repeated (credentials first; --big-credentials last, or the
                   extra flood "big-bodies-last", puts them after the messages);
                   requests started before the end are answered (up to 60 s
                   each), so the window may be longer than --seconds
    slow-consumer  one WebSocket client that never reads, and a backend that
                   POSTs /send batches of 1,000 one-byte messages to it, for
                   --seconds and on until the client is cut off (at most
                   --slow-max-seconds), with the counts of succeeded/failed

For each it reports the daemon's RSS (VmRSS from /proc/PID/status, sampled
every 100 ms) before the flood, its peak, and after the attacker left and
--settle seconds passed (plus the kernel's VmHWM), the daemon's CPU during the
flood, the victim's PING->PONG p50/p99 before and during the flood, and
whether the daemon closed the attacker (when, with which close code, and the
daemon's log lines about it). PINGs still unanswered when the victim stops
count at their age so far (a lower bound), and are reported apart too.

To run it against another tree, put it first on PYTHONPATH: the daemon is
started with the same PYTHONPATH, from that directory when it holds
socktopus_tw, and its first log line says which socktopus_tw it imported.
The load generator itself imports nothing from socktopus_tw.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from datetime import UTC, datetime

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable
APP, SECRET = "bench", "bench-secret-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")
FLOODS = ["pings", "text-ping", "big-bodies", "slow-consumer"]
EXTRA = ["big-bodies-last"]
MiB = 2**20

#: twistd, run in-process so its first line names the socktopus_tw it uses.
DAEMON = (
    "import sys, socktopus_tw\n"
    "print('floods: socktopus_tw from', socktopus_tw.__file__, flush=True)\n"
    "from twisted.scripts.twistd import run\n"
    "sys.argv[0] = 'twistd'\n"
    "sys.exit(run())\n"
)


# -- small helpers, independent of the tree under test --------------------


def makeToken(app: str, secret: str, connectionId: str, nowMilliseconds: int) -> str:
    """
    README's token: hex(T) h hex(APP) h hex(ID) h hex(HMAC_SHA256(SECRET, T + ID)).
    """
    stamp = str(int(nowMilliseconds))
    signature = hmac.digest(secret.encode(), (stamp + connectionId).encode(), hashlib.sha256)
    return "h".join(
        [stamp.encode().hex(), app.encode().hex(), connectionId.encode().hex(), signature.hex()]
    )


def handshake(port: int, connectionId: str) -> bytes:
    token = makeToken(APP, SECRET, connectionId, int(time.time() * 1000))
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /recieve?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def clientFrame(opcode: int, payload: bytes) -> bytes:
    # Client frames must be masked; a zero mask keeps the payload as is.
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpuSeconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closeCode(payload: bytes) -> int | None:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


class FrameParser:
    """
    Server frames (unmasked) out of a byte stream; calls back per frame.
    """

    def __init__(self, onFrame) -> None:
        self.buffer = b""
        self.onFrame = onFrame

    def feed(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
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
            self.onFrame(opcode, buffer[start : start + length])
            position = start + length
        self.buffer = buffer[position:]


def rawUpgrade(port: int, connectionId: str, rcvbuf: int | None = None) -> socket.socket:
    """
    A blocking socket upgraded to WebSocket; reads only the 101 response head.
    """
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(handshake(port, connectionId))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)  # byte by byte: nothing past the head is read
        if not chunk:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode("latin-1")[:300])
    return s


def tailCloseCode(tail: bytes) -> int | None:
    """
    The code of a close frame that ends TAIL, if one does.
    """
    for n in range(0, 126):
        if len(tail) >= n + 2 and tail[-(n + 2)] == 0x88 and tail[-(n + 1)] == n:
            return closeCode(tail[len(tail) - n :]) if n else 1005
    return None


def drainForClose(s: socket.socket, budget: float = 3.0) -> dict:
    """
    After the flood, read what the daemon left in a dead socket, looking for
    its close frame at the end.
    """
    s.setblocking(False)
    tail, total, ended = b"", 0, None
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], 0.1)
        if not ready:
            continue
        try:
            data = s.recv(1 << 20)
        except OSError as e:
            ended = type(e).__name__
            break
        if not data:
            ended = "EOF"
            break
        total += len(data)
        tail = (tail + data)[-256:]
    return {
        "read_after_bytes": total,
        "read_after_end": ended or "still open",
        "close_code": tailCloseCode(tail),
    }


# -- the victim -------------------------------------------------------------


class Victim(asyncio.Protocol):
    def __init__(self, request: bytes, opened: asyncio.Future) -> None:
        self.request = request
        self.opened = opened
        self.upgraded = False
        self.head = b""
        self.outstanding: deque[int] = deque()
        self.samples: list[tuple[int, int]] = []
        self.closedAt: int | None = None
        self.closeCode: int | None = None
        self.parser = FrameParser(self.frame)

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(self.head[:300].decode("latin-1")))
                return
            self.upgraded = True
            self.opened.set_result(self)
            data, self.head = self.head[end + 4 :], b""
        self.parser.feed(data)

    def frame(self, opcode: int, payload: bytes) -> None:
        now = time.time_ns()
        if opcode == 1 and payload == b"PONG" and self.outstanding:
            sent = self.outstanding.popleft()
            self.samples.append((sent, now - sent))
        elif opcode == 9:  # a server ping: answer, as a browser would
            self.transport.write(clientFrame(0xA, payload))
        elif opcode == 8 and self.closedAt is None:
            # Closed by the daemon: answer as a browser would, and stop.
            self.closeCode = closeCode(payload)
            self.closedAt = now
            self.transport.write(clientFrame(8, payload[:2]))

    def connection_lost(self, exc) -> None:
        if self.closedAt is None:
            self.closedAt = time.time_ns()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))


async def victim(port: int, interval: float) -> dict:
    loop = asyncio.get_running_loop()
    opened = loop.create_future()
    await loop.create_connection(
        lambda: Victim(handshake(port, "victim"), opened), "127.0.0.1", port
    )
    client = await opened
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"ready": True}), flush=True)
    ping = clientFrame(1, b"PING")
    start, n = time.monotonic(), 0
    while not stop.is_set() and client.closedAt is None:
        client.outstanding.append(time.time_ns())
        client.transport.write(ping)
        n += 1
        delay = start + n * interval - time.monotonic()
        if delay < 0:  # fallen behind (this process starved): keep the pace from now
            start, n, delay = time.monotonic(), 0, 0
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
    return {
        "samples": client.samples,
        "unanswered": list(client.outstanding),
        "stopped": time.time_ns(),
        "closed_at": client.closedAt,
        "close_code": client.closeCode,
    }


# -- the attackers ------------------------------------------------------------


def floodPings(port: int, seconds: float) -> dict:
    """
    Never reads; writes ping frames as fast as the socket takes them.
    """
    s = rawUpgrade(port, "attacker")
    s.setblocking(False)
    frame = clientFrame(9, bytes(range(125)))
    chunk = memoryview(frame * 512)
    sent = offset = 0
    closed = error = None
    marks: list[tuple[float, int]] = []  # (monotonic, bytes sent so far), every 0.1 s
    start = time.time_ns()
    began = time.monotonic()
    deadline = began + seconds
    while (now := time.monotonic()) < deadline:
        if not marks or now - marks[-1][0] >= 0.1:
            marks.append((now, sent))
        _, writable, _ = select.select([], [s], [], 0.05)
        if not writable:
            continue
        try:
            n = s.send(chunk[offset:])
        except BlockingIOError:
            continue
        except OSError as e:
            closed, error = time.time_ns(), type(e).__name__
            break
        sent += n
        offset = (offset + n) % len(chunk)
    end = time.time_ns()
    finished = time.monotonic()
    perSecond = [
        round((b - a) / MiB, 1)
        for (_, a), (_, b) in zip(marks[::10], [*marks[10::10], (finished, sent)], strict=True)
    ]
    report = {
        "start": start,
        "end": end,
        "bytes_sent": sent,
        "frames_sent": sent // len(frame),
        "mib_sent": round(sent / MiB, 1),
        "mib_sent_each_second": perSecond,
        "closed_at": closed,
        "write_error": error,
    }
    if closed is not None:
        report.update(drainForClose(s))
    s.close()
    return report


async def floodTextPing(port: int, seconds: float) -> dict:
    """
    Text PING frames as fast as the socket takes them, reading the PONGs.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(port, "attacker"))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode("latin-1")[:300])
    state = {"pongs": 0, "close_code": None, "closed_at": None, "close_frame_at": None}

    def frame(opcode: int, payload: bytes) -> None:
        if opcode == 1 and payload == b"PONG":
            state["pongs"] += 1
        elif opcode == 8 and state["close_code"] is None:
            state["close_code"] = closeCode(payload)
            state["close_reason"] = payload[2:].decode("utf-8", "replace")
            state["close_frame_at"] = time.time_ns()

    parser = FrameParser(frame)

    leaving = False

    async def read() -> None:
        try:
            while data := await reader.read(1 << 16):
                parser.feed(data)
        except OSError:
            pass
        if not leaving:
            state["closed_at"] = time.time_ns()

    reading = asyncio.create_task(read())
    chunk = clientFrame(1, b"PING") * 1000
    sent = 0
    start = time.time_ns()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and state["closed_at"] is None:
            writer.write(chunk)
            sent += 1000
            await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.monotonic()))
    except (OSError, TimeoutError):
        pass
    end = time.time_ns()
    leaving = True
    writer.transport.abort()
    await asyncio.wait([reading], timeout=1)
    reading.cancel()
    return {
        "start": start,
        "end": end,
        "frames_sent": sent,
        "pongs_received": state["pongs"],
        **{k: v for k, v in state.items() if k != "pongs"},
    }


class Upload(asyncio.Protocol):
    """
    One POST whose answer may come (and the connection close) before the
    whole body is written.
    """

    def __init__(self) -> None:
        self.data = b""
        self.done = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.data += data
        end = self.data.find(b"\r\n\r\n")
        if end >= 0 and not self.done.done():
            match = re.search(rb"(?i)content-length:\s*(\d+)", self.data[:end])
            if match and len(self.data) - end - 4 >= int(match.group(1)):
                self.done.set_result(self.data)

    def connection_lost(self, exc) -> None:
        self.lost = True
        self.writable.set()
        if not self.done.done():
            self.done.set_result(self.data)


def bigBody(size: int, credentialsLast: bool) -> bytes:
    credentials = f'"secretName":"{APP}","secret":"wrong-secret"'
    content = "x" * 64
    head = "{" + ("" if credentialsLast else credentials + ",") + '"messages":['
    tail = "]" + ("," + credentials if credentialsLast else "") + "}"
    parts, length, n = [], len(head) + len(tail), 0
    while True:
        part = f'{{"recipient":"r{n}","content":"{content}"}}'
        if length + len(part) + 1 > size:
            break
        parts.append(part)
        length += len(part) + 1
        n += 1
    # Pad the last content to the exact size.
    parts[-1] = parts[-1][:-2] + "x" * (size - length + 1) + '"}'
    body = (head + ",".join(parts) + tail).encode()
    assert len(body) == size, (len(body), size)
    return body


async def floodBigBodies(
    port: int, seconds: float, concurrency: int, size: int, credentialsLast: bool
) -> dict:
    body = bigBody(size, credentialsLast)
    request = (
        b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    loop = asyncio.get_running_loop()
    statuses: dict[str, int] = {}
    durations: list[float] = []
    messages: dict[str, str] = {}
    start = time.time_ns()
    deadline = time.monotonic() + seconds

    async def one() -> None:
        began = time.monotonic()
        try:
            _, upload = await loop.create_connection(Upload, "127.0.0.1", port)
        except OSError as e:
            statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
            return
        upload.transport.write(request)
        view = memoryview(body)
        for offset in range(0, len(body), 1 << 20):
            await upload.writable.wait()
            if upload.lost or upload.done.done():
                break
            upload.transport.write(view[offset : offset + (1 << 20)])
        try:
            data = await asyncio.wait_for(asyncio.shield(upload.done), 60)
        except TimeoutError:
            data = b""
        if not upload.lost and not upload.transport.is_closing():
            upload.transport.abort()
        status = (
            data[9:12].decode("latin-1")
            if data.startswith(b"HTTP/1.")
            else ("reset" if upload.lost else "timeout")
        )
        statuses[status] = statuses.get(status, 0) + 1
        if status not in messages and b"\r\n\r\n" in data:
            messages[status] = data.split(b"\r\n\r\n", 1)[1][:200].decode("latin-1")
        durations.append(time.monotonic() - began)

    async def repeat() -> None:
        while time.monotonic() < deadline:
            await one()

    await asyncio.gather(*(repeat() for _ in range(concurrency)))
    return {
        "start": start,
        "end": time.time_ns(),
        "body_bytes": len(body),
        "credentials": "last" if credentialsLast else "first",
        "requests": len(durations),
        "statuses": statuses,
        "bodies": messages,
        "request_p50_s": round(percentile(durations, 50), 2),
        "request_max_s": round(max(durations, default=float("nan")), 2),
    }


async def floodSlowConsumer(
    port: int, seconds: float, batch: int, senders: int, longest: float
) -> dict:
    """
    A client that never reads, and backends sending it 1-byte messages in
    batches: for SECONDS, and on until it is cut off (at most LONGEST).
    """
    s = rawUpgrade(port, "slow")
    body = json.dumps(
        {
            "secretName": APP,
            "secret": SECRET,
            "messages": [{"recipient": "slow", "content": "x"}] * batch,
        }
    ).encode()
    request = (
        b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    totals = {"requests": 0, "succeeded": 0, "failed": 0}
    cut: dict = {}
    errors: dict[str, int] = {}
    latencies: list[float] = []
    start = time.time_ns()
    began = time.monotonic()

    def going() -> bool:
        elapsed = time.monotonic() - began
        return elapsed < seconds or (not cut and elapsed < longest)

    async def backend() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while going():
            sentAt = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            answer = await reader.readexactly(length)
            latencies.append(time.monotonic() - sentAt)
            totals["requests"] += 1
            if not head.startswith(b"HTTP/1.1 200"):
                key = head[9:12].decode()
                errors[key] = errors.get(key, 0) + 1
                continue
            result = json.loads(answer)
            totals["succeeded"] += len(result["succeeded"])
            totals["failed"] += len(result["failed"])
            if result["failed"] and not cut:
                cut.update(
                    at=time.time_ns(),
                    succeeded=totals["succeeded"],
                    inBatch=len(result["succeeded"]),
                )
        writer.close()

    await asyncio.gather(*(backend() for _ in range(senders)))
    end = time.time_ns()
    report = {
        "start": start,
        "end": end,
        "senders": senders,
        "batch": batch,
        **totals,
        "errors": errors,
        "cut_off_after_s": round((cut["at"] - start) / 1e9, 2) if cut else None,
        "succeeded_before_cut_off": cut.get("succeeded"),
        "send_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "send_p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }
    report.update(drainForClose(s, budget=2.0) if cut else {"read_after_end": "not cut off"})
    s.close()
    return report


def attack(name: str, port: int, seconds: float, options: argparse.Namespace) -> dict:
    if name == "pings":
        return floodPings(port, seconds)
    if name == "text-ping":
        return asyncio.run(floodTextPing(port, seconds))
    if name in ("big-bodies", "big-bodies-last"):
        last = name == "big-bodies-last" or options.big_credentials == "last"
        return asyncio.run(
            floodBigBodies(port, seconds, options.big_concurrency, int(options.big_mib * MiB), last)
        )
    if name == "slow-consumer":
        return asyncio.run(
            floodSlowConsumer(
                port, seconds, options.slow_batch, options.slow_senders, options.slow_max_seconds
            )
        )
    raise SystemExit(f"unknown flood {name}")


def attackMeasured(name: str, port: int, seconds: float, options: argparse.Namespace) -> dict:
    mark = cpuSeconds()
    report = attack(name, port, seconds, options)
    report["generator_cpu_s"] = round(cpuSeconds() - mark, 2)
    return report


# -- the daemon and the conductor -------------------------------------------


class Daemon:
    def __init__(self, workdir: str, logger: str) -> None:
        self.port = freePort()
        env = dict(os.environ, **{f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET})
        # Another tree first on PYTHONPATH: run from it, as a clone is run.
        first = (env.get("PYTHONPATH") or "").split(os.pathsep)[0]
        cwd = first if first and os.path.isdir(os.path.join(first, "socktopus_tw")) else workdir
        loggerArgs = [] if logger == "twistd" else ["--logger", logger]
        self.logPath = os.path.join(workdir, "daemon.log")
        self.logFile = open(self.logPath, "wb")
        self.command = [
            PYTHON,
            "-c",
            DAEMON,
            "-n",
            "--pidfile=",
            *loggerArgs,
            "socktopus",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1:backlog=1024",
            "--database",
            f"sqlite:{workdir}/floods.sqlite3",
            "--idle-timeout",
            "120",
        ]
        self.cwd = cwd
        self.process = subprocess.Popen(
            self.command, stdout=self.logFile, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
        self.lines: list[tuple[float, str]] = []  # (wall time seen, line)
        self._offset = 0
        self._partial = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.readLog()
            if any("Listening on" in line for _, line in self.lines):
                break
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        else:
            self.process.kill()
        if self.process.poll() is not None or not any("Listening on" in x for _, x in self.lines):
            self.stop()
            text = "".join(line + "\n" for _, line in self.lines[-30:])
            raise RuntimeError(f"the daemon did not start:\n{text}")
        self.tree = next(
            (
                line.split(" from ", 1)[1]
                for _, line in self.lines
                if line.startswith("floods: socktopus_tw from")
            ),
            "?",
        )

    def readLog(self) -> None:
        with open(self.logPath, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        now = time.time()
        self.lines.extend((now, line.decode("utf-8", "replace")) for line in complete)

    def status(self) -> dict[str, int]:
        with open(f"/proc/{self.process.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}

    def cpu(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.logFile.close()
        self.readLog()
        return self.process.returncode


class Sampler(threading.Thread):
    """
    VmRSS every 100 ms, and the daemon's new log lines, stamped when seen.
    """

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon=True)
        self.daemonProcess = daemon
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.samples.append((time.time(), self.daemonProcess.status()["VmRSS"]))
                self.daemonProcess.readLog()
            except (OSError, KeyError):
                pass
            self.halt.wait(0.1)

    def peak(self, since: float) -> int:
        return max((rss for t, rss in self.samples if t >= since), default=0)


def child(role: str, *arguments: object) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, os.path.abspath(__file__), role, *map(str, arguments), *childOptions],
        stdout=subprocess.PIPE,
        text=True,
    )


childOptions: list[str] = []


def result(process: subprocess.Popen, timeout: float) -> dict:
    line = ""
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        value = json.loads(line)
        if "result" in value:
            process.wait(max(1, deadline - time.monotonic()))
            with open(value["result"]) as f:
                report = json.load(f)
            os.remove(value["result"])
            return report
        if "error" in value:
            process.wait()
            raise RuntimeError(value["error"])
    process.wait()
    raise RuntimeError(f"{process.args[2]} ended without a result (exit {process.returncode})")


def latencyFigures(samples: list, unanswered: list, stopped: int, start: int, end: int) -> dict:
    answered = [latency / 1e6 for sent, latency in samples if start <= sent < end]
    pending = [(stopped - sent) / 1e6 for sent in unanswered if start <= sent < end]
    everything = answered + pending
    return {
        "pings": len(everything),
        "unanswered": len(pending),
        "p50_ms": round(percentile(everything, 50), 2),
        "p99_ms": round(percentile(everything, 99), 2),
        "max_ms": round(max(everything, default=float("nan")), 1),
    }


def runFlood(name: str, options: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="socktopus-floods-") as workdir:
        for attempt in range(options.retries + 1):
            try:
                daemon = Daemon(workdir, options.logger)
                break
            except RuntimeError as e:
                print(f"[{name}] {e}", file=sys.stderr)
                if attempt == options.retries:
                    return {"name": name, "error": str(e)[-2000:]}
                print(f"[{name}] retrying in {options.retry_wait} s", file=sys.stderr)
                time.sleep(options.retry_wait)
        print(
            f"[{name}] daemon pid {daemon.process.pid} on port {daemon.port}, "
            f"socktopus_tw from {daemon.tree}",
            file=sys.stderr,
        )
        sampler = Sampler(daemon)
        sampler.start()
        report: dict = {
            "name": name,
            "tree": daemon.tree,
            "tree_state": treeState(daemon.tree),
            "port": daemon.port,
        }
        try:
            victim = child("_victim", daemon.port, options.victim_interval_ms)
            ready = victim.stdout.readline()
            if "ready" not in ready:
                raise RuntimeError(f"victim failed: {ready!r}")
            time.sleep(options.baseline)
            before = daemon.status()["VmRSS"]
            cpu0 = daemon.cpu()
            spawned = time.time_ns()
            attacker = child("_attack", name, daemon.port, options.seconds)
            attacked = result(attacker, max(options.seconds, options.slow_max_seconds) + 120)
            cpu1 = daemon.cpu()
            time.sleep(options.settle)
            after = daemon.status()
            os.kill(victim.pid, signal.SIGTERM)
            victimReport = result(victim, 30)
        except Exception as e:  # keep what we have: the daemon's log says why
            report["error"] = f"{type(e).__name__}: {e}"
            attacked, victimReport = None, None
        finally:
            sampler.halt.set()
            sampler.join()
            exitCode = daemon.stop()
            if options.logs:
                os.makedirs(options.logs, exist_ok=True)
                shutil.copy(daemon.logPath, os.path.join(options.logs, f"{name}.log"))
        report["daemon_exit"] = exitCode
        if attacked is None:
            report["daemon_log_tail"] = [line for _, line in daemon.lines[-20:]]
            return report
        start, end = attacked.pop("start"), attacked.pop("end")
        report.update(
            {
                "seconds": round((end - start) / 1e9, 2),
                "rss_before_mib": round(before / MiB, 1),
                "rss_peak_mib": round(sampler.peak(start / 1e9) / MiB, 1),
                "rss_after_mib": round(after["VmRSS"] / MiB, 1),
                "vm_hwm_mib": round(after["VmHWM"] / MiB, 1),
                "daemon_cpu_s": round(cpu1 - cpu0, 2),
            }
        )
        stopped = victimReport["stopped"]
        # The baseline: the victim alone, before the attacker's process starts.
        report["victim_baseline"] = latencyFigures(
            victimReport["samples"],
            victimReport["unanswered"],
            stopped,
            spawned - int(options.baseline * 0.8e9),
            spawned,
        )
        report["victim_flood"] = latencyFigures(
            victimReport["samples"], victimReport["unanswered"], stopped, start, end
        )
        if victimReport["closed_at"] is not None:
            report["victim_closed"] = {
                "after_s": round((victimReport["closed_at"] - start) / 1e9, 2),
                "code": victimReport["close_code"],
            }
        for key in ("closed_at", "close_frame_at"):
            if attacked.get(key) is not None:
                attacked[key.replace("_at", "_after_s")] = round(
                    (attacked.pop(key) - start) / 1e9, 2
                )
            else:
                attacked.pop(key, None)
        report["attacker"] = attacked
        who = {"slow-consumer": "bench/slow"}.get(name, "bench/attacker")
        entries = [
            (t - start / 1e9, re.sub(r"^\S+ \[[^\]]*\] ", "", line))
            for t, line in daemon.lines
            if (who in line and "Connected" not in line)
            or "bench/victim" in line
            or (
                re.search(r"\b(Refused|Cutting|Closing|rate|limit|1008|budget)\b", line, re.I)
                and "Sent " not in line
            )
        ]
        report["daemon_log"] = [f"+{offset:.1f}s {line}" for offset, line in entries[:12]]
        report["daemon_tracebacks"] = tracebacks([line for _, line in daemon.lines])
        report["attacker_closed"] = attackerClosed(name, attacked, entries, (end - start) / 1e9)
    return report


def tracebacks(lines: list[str], most: int = 3) -> list[str]:
    """
    The first few tracebacks in the daemon's log, each as one text: from
    "Traceback" to the exception's own line.
    """
    found: list[str] = []
    for index, line in enumerate(lines):
        if "Traceback (most recent call last)" not in line or len(found) >= most:
            continue
        block = [line]
        for following in lines[index + 1 : index + 80]:
            block.append(following)
            if re.search(r"^\S+ \[[^\]]*\]\s+[\w.]+(Error|Exception|Exit)\b", following):
                break
        found.append("\n".join(block))
    return found


def treeState(tree: str) -> dict:
    """
    The commit of the tree the daemon ran, and a digest of its uncommitted
    changes (the same digest means the same code).
    """
    root = os.path.dirname(os.path.dirname(tree))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        diff = subprocess.run(
            ["git", "-C", root, "diff", "HEAD", "--", "socktopus_tw"],
            capture_output=True,
            timeout=30,
        ).stdout
        untracked = subprocess.run(
            ["git", "-C", root, "ls-files", "--others", "--exclude-standard", "socktopus_tw"],
            capture_output=True,
            timeout=30,
        ).stdout.split()
        for name in untracked:
            with open(os.path.join(root, name.decode()), "rb") as f:
                diff += b"\0" + name + b"\0" + f.read()
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {
        "head": head,
        "uncommitted_socktopus_tw_diff_sha1": hashlib.sha1(diff).hexdigest()[:12] if diff else None,
    }


def attackerClosed(name: str, attacked: dict, log: list[tuple[float, str]], seconds: float) -> str:
    """
    One phrase: did the daemon close the attacker, when, with which code.
    """
    if name.startswith("big-bodies"):
        statuses = ", ".join(f"{k} x{v}" for k, v in sorted(attacked["statuses"].items()))
        return f"{attacked['requests']} requests: {statuses}"
    if name == "slow-consumer":
        if attacked.get("cut_off_after_s") is None:
            return "not cut off"
        code = attacked.get("close_code")
        how = attacked.get("read_after_end")
        ending = f", close {code}" if code else f", no close frame ({how})"
        return f"cut off after {attacked['cut_off_after_s']} s{ending}"
    if name == "text-ping":
        if attacked.get("close_code") is not None:
            return f"closed {attacked['close_code']} after {attacked.get('close_frame_after_s')} s"
        if attacked.get("closed_after_s") is not None:
            return f"dropped without a close frame after {attacked['closed_after_s']} s"
        return "not closed"
    if attacked.get("closed_after_s") is not None:
        code = attacked.get("close_code")
        return f"closed after {attacked['closed_after_s']} s ({attacked['write_error']})" + (
            f", close {code}" if code else ", no close frame seen"
        )
    # A client that never reads may not notice: ask the daemon's log.
    dropped = [
        (offset, line)
        for offset, line in log
        if ("Disconnected" in line or "Cutting" in line) and offset < seconds - 0.1
    ]
    if dropped:
        return f"dropped at +{dropped[0][0]:.1f} s, unnoticed by the client ({dropped[0][1]})"
    rates = attacked.get("mib_sent_each_second") or []
    stalled = ", the daemon stopped reading it" if rates and rates[-1] < 0.1 else ""
    return f"not closed ({attacked.get('mib_sent')} MiB sent{stalled})"


COLUMNS = [
    ("flood", 15),
    ("s", 5),
    ("RSS before", 10),
    ("peak", 7),
    ("after", 7),
    ("HWM", 7),
    ("CPU s", 6),
    ("base p50/p99", 13),
    ("flood p50/p99 ms", 17),
    ("unans", 6),
    ("attacker", 0),
]


def table(results: list[dict]) -> str:
    lines = ["  ".join(f"{title:{width}}" for title, width in COLUMNS).rstrip()]
    for r in results:
        if "error" in r and "rss_before_mib" not in r:
            lines.append(f"{r['name']:15}  error: {r['error'].splitlines()[0]}")
            continue
        base, flood = r["victim_baseline"], r["victim_flood"]
        latency = f"{flood['p50_ms']}/{flood['p99_ms']}"
        if "victim_closed" in r:
            closed = r["victim_closed"]
            latency = f"victim closed {closed['code']} at {closed['after_s']:+} s"
        cells = [
            r["name"],
            r["seconds"],
            f"{r['rss_before_mib']} MiB",
            r["rss_peak_mib"],
            r["rss_after_mib"],
            r["vm_hwm_mib"],
            r["daemon_cpu_s"],
            f"{base['p50_ms']}/{base['p99_ms']}",
            latency,
            flood["unanswered"],
            r["attacker_closed"],
        ]
        lines.append(
            "  ".join(f"{c!s:{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip()
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each flood")
    parser.add_argument("--only", help="comma-separated floods: " + ",".join(FLOODS + EXTRA))
    parser.add_argument("--json", default=os.path.join(HERE, "floods-results.json"))
    parser.add_argument(
        "--logger",
        default="socktopus_tw.logs.text",
        help="twistd's --logger for the daemon ('twistd': its default)",
    )
    parser.add_argument(
        "--victim-interval-ms",
        type=float,
        default=100.0,
        help="the victim's PING interval (within the daemon's default limit of 20 frames a second)",
    )
    parser.add_argument("--logs", help="a directory to keep each flood's daemon log in")
    parser.add_argument(
        "--baseline", type=float, default=1.0, help="seconds of victim PINGs before each flood"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds after the attacker left before RSS 'after'",
    )
    parser.add_argument("--big-concurrency", type=int, default=8)
    parser.add_argument("--big-mib", type=float, default=15.7)
    parser.add_argument("--big-credentials", choices=["first", "last"], default="first")
    parser.add_argument("--slow-batch", type=int, default=1000)
    parser.add_argument(
        "--slow-senders",
        type=int,
        default=1,
        help="concurrent backends sending to the slow consumer",
    )
    parser.add_argument(
        "--slow-max-seconds",
        type=float,
        default=60.0,
        help="the slow-consumer flood goes on past --seconds until the client "
        "is cut off, at most this long",
    )
    parser.add_argument(
        "--retries", type=int, default=0, help="times to retry a daemon that does not start"
    )
    parser.add_argument("--retry-wait", type=float, default=60.0)
    parser.add_argument("--label", help="a name for this run in the JSON (e.g. the tree)")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add this run to the JSON file's runs instead of replacing them",
    )
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    childOptions[:] = [
        "--big-concurrency",
        str(options.big_concurrency),
        "--big-mib",
        str(options.big_mib),
        "--big-credentials",
        options.big_credentials,
        "--slow-batch",
        str(options.slow_batch),
        "--slow-senders",
        str(options.slow_senders),
        "--slow-max-seconds",
        str(options.slow_max_seconds),
    ]
    floods = (options.only or ",".join(FLOODS)).split(",")
    for name in floods:
        if name not in FLOODS + EXTRA:
            raise SystemExit(f"unknown flood {name}")

    results = []
    for name in floods:
        results.append(runFlood(name, options))
        print(table(results[-1:]).splitlines()[-1], file=sys.stderr)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": options.label,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join(["bench/floods.py", *sys.argv[1:]]),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "uvloop": uvloopInstalled(),
        "results": results,
    }
    runs = []
    if options.append and os.path.exists(options.json):
        with open(options.json) as f:
            runs = json.load(f).get("runs", [])
    with open(options.json, "w") as f:
        json.dump({"runs": [*runs, report]}, f, indent=2)
    print(table(results))
    for r in results:
        print(f"\n{r['name']}: tree {r.get('tree')}")
        for key in ("attacker", "victim_closed", "error"):
            if key in r:
                print(f"  {key}: {json.dumps(r[key])}")
        for line in r.get("daemon_log", []) + r.get("daemon_log_tail", []):
            print(f"  log {line[:200]}")
    print(f"\nwritten to {options.json}")


def uvloopInstalled() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def childMain() -> None:
    role = sys.argv[1]
    if uvloopInstalled():
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-concurrency", type=int)
    parser.add_argument("--big-mib", type=float)
    parser.add_argument("--big-credentials")
    parser.add_argument("--slow-batch", type=int)
    parser.add_argument("--slow-senders", type=int)
    parser.add_argument("--slow-max-seconds", type=float)
    if role == "_victim":
        positional, rest = sys.argv[2:4], sys.argv[4:]
    else:
        positional, rest = sys.argv[2:5], sys.argv[5:]
    options = parser.parse_args(rest)
    try:
        if role == "_victim":
            value = asyncio.run(victim(int(positional[0]), float(positional[1]) / 1000))
        else:
            name, port, seconds = positional
            value = attackMeasured(name, int(port), float(seconds), options)
    except Exception as e:
        traceback.print_exc()
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        raise SystemExit(1) from e
    # The result can be larger than a pipe's buffer, and an event loop may
    # have left stdout non-blocking: hand it over in a file (as loadgen.py).
    descriptor, path = tempfile.mkstemp(prefix="socktopus-floods-", suffix=".json")
    with os.fdopen(descriptor, "w") as f:
        json.dump(value, f)
    print(json.dumps({"result": path}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        childMain()
    else:
        main()
