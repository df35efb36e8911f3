"""
The Socktopus benchmark: the daemon as users run it (twistd, a subprocess),
driven over loopback by separate load-generator processes.

    .venv/bin/python bench/run.py [--json bench/last-run.json] [--seconds 10] [--only PHASES]
                                  [--logger socktopus_tw.logs.text | twistd] [--runs 3]
                                  [--connects 10000] [--in-flight 100] [--burst 18000]
    .venv/bin/python bench/run.py --baseline GO_BINARY [--rounds 3] [--seconds 10]
                                  [--json bench/baseline-results.json]
    .venv/bin/python bench/run.py --cluster [--rounds 3] [--seconds 6] [--rate 10000]
                                  [--redis-socket] [--json bench/cluster-results.json]
    .venv/bin/python bench/run.py --reuseport [--rounds 3] [--seconds 10] [--clients 1000]
                                  [--loops 96] [--json bench/reuseport-results.json]
    .venv/bin/python bench/run.py --cluster-disconnects [--rounds 3] [--seconds 8] [--rate 10000]
    .venv/bin/python bench/run.py --webhook [--rounds 3] [--seconds 10] [--churn 1000]
                                  [--json bench/webhook-results.json]

Prints a table and writes JSON. Daemon CPU comes from /proc/<pid>/stat
(user + system), so it is the daemon's own cost whatever the generator does.
The daemon logs as the shipped systemd unit has it log (--logger
socktopus_tw.logs.text); "--logger twistd" measures twistd's default observer.

The phases (PHASES, comma-separated; all by default): batch (100 x 64 B a
request), single (one message a request) and 1k (100 x 1 KiB), each 1,000
clients and 4 closed /send loops on one daemon; connect; idle (RSS per
connection with --idle clients held); accounts (logins at bcrypt cost 12,
with a client timing PING -> PONG meanwhile, 10 PINGs a second: under the
daemon's --client-message-rate of 20, past which it closes the client).

connect: --connects WebSocket connects (10,000), --in-flight (100) at a
time, then --burst clients (18,000) all at once, as after a restart, each
on a fresh daemon, from 4 generator processes (plain sockets under epoll,
each from a loopback address of its own). Each client's token is stamped
as its try starts, as a backend mints one just before its client connects,
and lives 5 s; a client refused (its token expired on the way, or anything
else) tries again with a fresh one, 3 tries at most. Daemon CPU per
connect (from the first connect to the last answer; the clients stay
connected), connects per second held (from the first try to the last
connect), handshake p50/p99 (from a try's start to its 101) and the
client's whole wait (from its first try), tokens expired, connects failed
(and why), and the kernel's count of connects its listen queue dropped.

--baseline runs the batch, single, connect and idle phases on our daemon
and on the Go original (BINARY, built by ../shared/reference/build-go-original),
both started as their users start them: ours as the README's command does,
`twistd -n socktopus` with PORT and the app's secret in the environment
(and once more with --logger socktopus_tw.logs.text, for the single phase),
the Go binary with PORT and the secret, each in an empty working
directory. Each group of phases runs on a fresh server of each, one after
the other, the one that goes first alternating from round to round
(--rounds, 3); each figure is given as Go's and ours (medians) and ours /
Go: the median of the rounds' ratios, and their range. The same load
generators drive both (the wire details checked in the Go source are in
BASELINE_WIRE and the JSON).

A window during which the rest of the machine used more than --others
cores (0.25) is measured again, up to three times.

--cluster (SPEC §6) starts its own redis-server (Debian's, no persistence,
on a free loopback port, or a unix socket with --redis-socket) and two
daemons with --redis, and runs the batch phase (100 x 64 B, 1,000 clients)
four ways, each as fast as the daemons answer and at a fixed --rate:

  single node     the batch phase on a daemon without --redis, in the same
                  round, so the ratio compares like with like;
  A->B            every client on node A, every request to node B;
  spread          clients interleaved over A and B, requests to both, so
                  each batch is half local, half for the other node.

CPU per 1,000 delivered messages is given for A, B, their sum and Redis
(each from its /proc/PID/stat); the "vs single" ratios divide by the single
node's figure at the same rate in the same round. Every figure is the
median over --rounds (3 unless given).

Other people's work on the same cores would be measured too: every
measurement (here and below) first waits for the machine to be quiet, and
one during which the rest of the machine used more than OTHERS cores
(other_cores in the JSON: /proc/stat's busy time less the daemons', Redis's
and the generators') is taken again, up to three times.

--reuseport measures the whole box, the way README's "Several daemons on
one port" runs it: one daemon, then two daemons with --redis sharing one
reuseport: port, under the same load: --clients WebSocket clients (1,000)
and --loops closed /send loops (96: fewer leave two daemons waiting on
each other's answers with a core idle; batches of 100 x 64 B, recipients
cycling over every client), all connected to that port, so the kernel
spreads both over the daemons. It reports the messages delivered per
second (counted at the clients), CPU per 1,000 of them for the daemons,
Redis and the load generator (one process of plain sockets under epoll,
which counts frames by their length rather than parsing them: it shares
the cores with what it measures), the cores each used, and two daemons'
throughput over one's in the same round: the median of --rounds (3), the
configuration that goes first alternating from round to round.

--cluster-disconnects checks SPEC §6's promise when 8,000 clients of node A
close at once (their processes killed together), with 100 more clients on
A getting cross-node /send batches (of 10) posted to node B at --rate
meanwhile: whether A ever logged Redis as unreachable (or any other Redis
trouble), how many of those messages failed, how late and slow A's /ready
answered, and how long until A's status counted the closes. Each round
(--rounds, 3) on a cluster of its own; JSON only with --json.

--webhook (SPEC §7.2) runs the batch phase (100 x 64 B) and the single
phase three ways in each round, the order alternating from round to round,
each on a daemon of its own (all with --metrics-listen, read between
windows):

  (a) no webhook;
  (b) BENCH_SOCKTOPUS_WEBHOOK to a receiver of the harness's (one process,
      plain sockets under epoll, events counted in the posts' bytes, 204
      at once), while a churn process opens and closes --churn WebSocket
      clients a second (1,000) to the same app, each sending one DATA:x and
      a close frame once upgraded: connect, message and disconnect events;
  (c) the same churn, the receiver reading the posts and never answering:
      the daemon's queue at its 10,000-event cap (waited for), dropping.

Before (b)'s and (c)'s /send windows the churn runs alone, no /send, on the
same daemon (and on (a)'s, where there is no webhook and the clients'
DATA:x is refused): its CPU per churned connection, times the connections
a /send window churned, is subtracted from that window's. Daemon CPU per
1,000 messages (batch) or requests (single) is given raw (all the daemon's
CPU) and net (the churn's subtracted), each over (a)'s of the same round;
the issue's goal is /send's within 5% of (a)'s. Since /send itself does
nothing for webhooks, what the churn adds beyond its own CPU (the reactor
shared, its garbage) is measured too: (a)'s daemon, after (a)'s windows,
runs both phases again under the same churn, "(a+)", and (b) and (c) are
also given over (a+) (*_vs_a_plus). Also the p99 latency (from
a message's stamp to its client), the events the receiver read per second,
its cores (not the daemon's), and the daemon's RSS after each window.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import bcrypt

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable
TWISTD = os.path.join(os.path.dirname(PYTHON), "twistd")
APP, SECRET = "bench", "bench-secret-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpuTimes(pid: int) -> tuple[float, float]:
    """
    A process's user and system CPU seconds so far, all its threads.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def boxTimes() -> tuple[float, float, float]:
    """
    The whole machine's CPU seconds so far (all cores): busy, stolen by the
    hypervisor, and all, from /proc/stat.
    """
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return (total - idle - iowait - steal) / TICK, steal / TICK, total / TICK


#: Busy cores (of the whole machine) below which it counts as quiet, and the
#: seconds quiet() waits for that at most.
QUIET, PATIENCE = 0.15, 600


#: The cores the rest of the machine may use in a --cluster or --reuseport
#: window before it is measured again (softirq and this script use about 0.1).
OTHERS = 0.25


def quiet(keepAlive: Any = None) -> float:
    """
    Wait until the machine is quiet, the set-up of what is measured next
    included (its processes are idle by now): someone else's test run on
    the same cores would be measured with it. The seconds waited (said
    every 30 s). KEEPALIVE, if given, is called every 10 s of waiting.
    """
    started = kept = time.monotonic()
    told = -math.inf  # when it last said it waits
    while True:
        busy0, wall0 = boxTimes()[0], time.monotonic()
        time.sleep(1.0)
        busy = (boxTimes()[0] - busy0) / (time.monotonic() - wall0)
        waited = time.monotonic() - started
        if busy <= QUIET or waited > PATIENCE:
            return waited
        if waited - told >= 30:
            print(f"  the machine is busy ({busy:.2f} cores); waiting ({waited:.0f} s)", flush=True)
            told = waited
        if keepAlive is not None and time.monotonic() - kept > 10:
            keepAlive()
            kept = time.monotonic()


def again(take: Any, entry: Any = None, others: float = OTHERS, pause: float = 0.0) -> dict:
    """
    A window's entry, ENTRY(TAKE()) (or TAKE() alone), taken again (three
    tries in all, each in "attempt") after PAUSE seconds while the rest of
    the machine used more than OTHERS cores during it ("other_cores").
    """
    for attempt in range(1, 4):
        result = take() if entry is None else entry(take())
        result["attempt"] = attempt
        if result.get("other_cores", 0) <= others:
            break
        used = result["other_cores"]
        print(f"  {result['name']}: {used:g} cores used by others; again", flush=True)
        time.sleep(pause)
    return result


def freePort() -> int:
    """
    A loopback port free right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raiseFileLimit(needed: int) -> None:
    """
    Let this process and its children (the daemon, the generators) hold
    NEEDED descriptors: the soft limit up to the hard one, and the hard one
    too where we may (as root).
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < needed:
        with contextlib.suppress(ValueError, OSError):  # only root may raise it
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            hard = needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE is {hard}; {needed} descriptors are needed")


class Server:
    """
    A server process the benchmark measures: its CPU, its memory, and its
    log (kept in a file, so it never blocks on a full pipe).
    """

    process: subprocess.Popen
    port: int

    def keepLog(self) -> None:
        self.log = tempfile.TemporaryFile()
        self.drain = subprocess.Popen(["cat"], stdin=self.process.stdout, stdout=self.log)

    def times(self) -> tuple[float, float]:
        """
        The server's user and system CPU seconds so far, all its threads.
        """
        return cpuTimes(self.process.pid)

    def cpu(self) -> float:
        return sum(self.times())

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def peakRss(self) -> int:
        """
        The most resident memory it ever had (VmHWM), in bytes.
        """
        with open(f"/proc/{self.process.pid}/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.drain.wait(5)


class Daemon(Server):
    """
    Our daemon as the benchmark runs it: twistd on a free loopback port
    with a listen backlog of 4,096, its database in WORKDIR.
    """

    def __init__(
        self,
        workdir: str,
        *arguments: str,
        logger: str = "twistd",
        listen: str = "tcp:0:interface=127.0.0.1:backlog=4096",
        environment: dict[str, str] | None = None,
        metricsPort: int | None = None,
    ) -> None:
        """
        ENVIRONMENT: more variables for it (an app's webhook); METRICSPORT:
        a loopback port for its --metrics-listen (see scrape()).
        """
        env = dict(os.environ, **{f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET}, **(environment or {}))
        logger = [] if logger == "twistd" else ["--logger", logger]
        self.metricsPort = metricsPort
        if metricsPort is not None:
            arguments = (*arguments, "--metrics-listen", f"tcp:{metricsPort}:interface=127.0.0.1")
        self.process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                *logger,
                "socktopus",
                "--listen",
                listen,
                "--database",
                f"sqlite:{workdir}/bench.sqlite3",
                "--idle-timeout",
                "120",
                *arguments,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        for line in self.process.stdout:
            match = re.search(rb"Listening on 127\.0\.0\.1:(\d+)", line)
            if match and int(match.group(1)) != metricsPort:
                self.port = int(match.group(1))
                break
        else:
            raise SystemExit("the daemon did not start")
        self.keepLog()

    def scrape(self) -> dict[str, float]:
        """
        Its /metrics (it needs a METRICSPORT), as {name{labels}: value}.
        """
        import urllib.request

        url = f"http://127.0.0.1:{self.metricsPort}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        figures = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                figures[name] = float(value)
        return figures


class AsUsersStart(Server):
    """
    A server started as its user starts it, for --baseline: ARGUMENTS in an
    empty working directory of its own, with the app's secret and PORT (a
    free one) in the environment and nothing else on its command line;
    ready once it answers GET /.
    """

    def __init__(self, *arguments: str) -> None:
        self.workdir = tempfile.TemporaryDirectory()
        self.port = freePort()
        env = dict(os.environ, PORT=str(self.port), **{f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET})
        self.process = subprocess.Popen(
            arguments,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir.name,
        )
        self.keepLog()
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise SystemExit(f"{arguments[0]} did not start:\n{self.log.read()[-2000:]}")
            time.sleep(0.1)

    def answers(self) -> bool:
        import http.client

        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            connection.request("GET", "/")
            connection.getresponse().read()
            connection.close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        super().stop()
        self.workdir.cleanup()


class Redis:
    """
    A redis-server of our own for --cluster: nothing saved, in WORKDIR, on
    a free loopback port or (UNIX) a socket there.
    """

    def __init__(self, workdir: str, unix: bool = False) -> None:
        arguments = [REDIS_SERVER, "--save", "", "--appendonly", "no", "--dir", workdir]
        if unix:
            path = os.path.join(workdir, "redis.sock")
            arguments += ["--port", "0", "--unixsocket", path, "--unixsocketperm", "700"]
            self.url = f"redis+unix://{path}"
            address: tuple | str = path
        else:
            port = freePort()
            arguments += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}"
            address = ("127.0.0.1", port)
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, cwd=workdir)
        deadline = time.monotonic() + 10
        while True:
            try:
                family = socket.AF_UNIX if unix else socket.AF_INET
                with socket.socket(family) as s:
                    s.connect(address)
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{REDIS_SERVER} did not start")
            time.sleep(0.05)

    def times(self) -> tuple[float, float]:
        return cpuTimes(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def start(role: str, port: int, *arguments: object) -> subprocess.Popen:
    return subprocess.Popen(
        [
            PYTHON,
            os.path.join(HERE, "loadgen.py"),
            role,
            str(port),
            APP,
            SECRET,
            *map(str, arguments),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def result(process: subprocess.Popen) -> dict:
    for line in process.stdout:
        value = json.loads(line)
        if "result" in value:
            process.wait()
            with open(value["result"]) as f:
                report = json.load(f)
            os.remove(value["result"])
            return report
    raise RuntimeError("load generator ended without a result")


def receivers(port: int, connections: int, processes: int) -> list[subprocess.Popen]:
    share = connections // processes
    return listen([(port, n * share, share, 1) for n in range(processes)])


def listen(groups: list[tuple[int, int, int, int]]) -> list[subprocess.Popen]:
    """
    One receiver process per (port, first, count, step), once all are connected.
    """
    started = [start("receive", *group) for group in groups]
    for process in started:
        expect(process, "ready")
    return started


def measure(
    watched: dict[str, Server | Redis],
    listeners: list[tuple[int, int, int, int]],
    senders: list[tuple[int, int]],
    batch: int,
    size: int,
    seconds: float,
    rate: float = 0,
    background: Any = None,
    probes: dict[str, Any] | None = None,
) -> dict:
    """
    Receivers as LISTENERS say, then one sender process per (port, loops)
    in SENDERS, to 1,000 recipients, for SECONDS (at RATE messages per
    second between them, unless 0): each WATCHED process's (user, system)
    CPU seconds over the window, what was sent and what was received.
    No SENDERS: a window of SECONDS with the receivers idle.

    BACKGROUND (--webhook's churn) is started once the machine is quiet,
    before the window, and stopped after it; each of PROBES (name: a
    function returning a dict of numbers) is read just before and after
    the window, its differences in "probes".
    """
    listening = listen(listeners)
    time.sleep(0.5)  # let connection set-up settle out of the measured window

    def keepAlive() -> None:
        # Every client sends PING, outside the window: the Go original
        # closes a client 20 s after its last PING, whatever else it does.
        for process in listening:
            process.send_signal(signal.SIGUSR1)
        time.sleep(0.2)

    waited = quiet(keepAlive)
    keepAlive()
    if background is not None:
        background.start()
    probed0 = {k: f() for k, f in (probes or {}).items()}
    before, busy0, wall0 = (
        {k: p.times() for k, p in watched.items()},
        boxTimes()[0],
        time.monotonic(),
    )
    loops = sum(n for _, n in senders)
    sending = [
        start("send", port, n, 1000, batch, size, seconds, *([rate * n / loops] if rate else []))
        for port, n in senders
    ]
    reports = [result(p) for p in sending]
    if not senders:
        time.sleep(seconds)
    time.sleep(0.5)  # in-flight frames reach the clients
    after, busy1, wall1 = (
        {k: p.times() for k, p in watched.items()},
        boxTimes()[0],
        time.monotonic(),
    )
    probed1 = {k: f() for k, f in (probes or {}).items()}
    if background is not None:
        background.stop()
    for process in listening:
        process.terminate()
    received = [result(p) for p in listening]
    sent = {key: sum(r[key] for r in reports) for key in ("requests", "sent", "failed", "late")}
    return {
        "seconds": wall1 - wall0,
        # From the first request to the last answer (the longest sender).
        "sending": max((r["seconds"] for r in reports), default=seconds),
        "cpu": {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in watched},
        **sent,
        "delivered": sum(r["received"] for r in received),
        "latencies": [ns / 1e6 for r in received for ns in r["latencies"]],
        "generator_cpu": sum(r["cpu"] for r in reports + received),
        "box_busy": busy1 - busy0,
        "waited_for_quiet": waited,
        "probes": {
            k: {key: probed1[k][key] - value for key, value in probed0[k].items()} for k in probed0
        },
    }


def relay(daemon: Server, name: str, batch: int, size: int, seconds: float) -> dict:
    """
    1,000 connections, 4 senders in one process, BATCH messages of SIZE bytes.
    """
    port = daemon.port
    raw = measure(
        {"daemon": daemon},
        [(port, 0, 500, 1), (port, 500, 500, 1)],
        [(port, 4)],
        batch,
        size,
        seconds,
    )
    user, system = raw["cpu"]["daemon"]
    cpu, wall = user + system, raw["seconds"]
    delivered, latencies = raw["delivered"], raw["latencies"]
    return {
        "name": name,
        "batch": batch,
        "size": size,
        "seconds": round(wall, 2),
        "requests": raw["requests"],
        "sent": raw["sent"],
        "failed": raw["failed"],
        "delivered": delivered,
        "delivered_per_s": round(delivered / wall),
        "requests_per_s": round(raw["requests"] / wall),
        "latency_p50_ms": round(percentile(latencies, 50), 2),
        "latency_p99_ms": round(percentile(latencies, 99), 2),
        "daemon_cpu_s": round(cpu, 2),
        "daemon_system_cpu_share": round(system / max(cpu, 0.01), 2),
        "daemon_cpu_ms_per_1000_messages": round(cpu * 1e6 / max(delivered, 1), 2),
        "daemon_cpu_ms_per_1000_requests": round(cpu * 1e6 / max(raw["requests"], 1), 2),
        "generator_cpu_s": round(raw["generator_cpu"], 2),
        # What the machine did besides the daemon and the generators.
        "other_cores": round((raw["box_busy"] - cpu - raw["generator_cpu"]) / wall, 2),
        "waited_for_quiet_s": round(raw["waited_for_quiet"], 1),
    }


def idleMemory(daemon: Server, connections: int) -> dict:
    before = daemon.rss()
    listening = receivers(daemon.port, connections, 4)
    time.sleep(1.0)
    after = daemon.rss()
    for process in listening:
        process.terminate()
    for process in listening:
        result(process)
    return {
        "name": "idle memory",
        "connections": connections,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "rss_per_connection_kib": round((after - before) / connections / 1024, 2),
    }


#: The connect phases' generator processes (a server's clients split
#: between them), the tries each client has, and the seconds a phase may
#: take before what is still connecting counts as unfinished.
CONNECTORS, CONNECT_TRIES, CONNECT_PATIENCE = 4, 3, 120
#: What a connect generator counts (see loadgen's Connector).
CONNECT_COUNTS = ("connected", "expired", "failed", "gave_up", "unfinished", "dropped")


#: The kernel's counts of connects a listener could not take at once
#: (/proc/net/netstat, for the whole machine: on loopback, the phase's).
TCP_QUEUES = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop")


def tcpQueues() -> dict[str, int]:
    with open("/proc/net/netstat") as f:
        names, values = [line.split() for line in f if line.startswith("TcpExt:")][:2]
    counts = dict(zip(names[1:], map(int, values[1:]), strict=True))
    return {name: counts.get(name, 0) for name in TCP_QUEUES}


def connects(server: Server, name: str, clients: int, parallel: int) -> dict:
    """
    CLIENTS WebSocket connects to SERVER from CONNECTORS processes, PARALLEL
    at a time between them (0: all at once, as clients come back after a
    restart), each client with a token of its own stamped as it starts (see
    loadgen's Connector). The server's CPU is counted from the first
    connect to the last answer (the clients stay connected, so no
    disconnect is in it); a client refused starts again with a fresh token.
    """
    share = clients // CONNECTORS
    each = max(1, parallel // CONNECTORS) if parallel else 0  # 0: all at once
    # Each from a loopback address of its own: see loadgen's Attempt.
    generators = [
        start(
            "connect",
            server.port,
            f"127.0.0.{n + 2}",
            n * share,
            share,
            each,
            CONNECT_TRIES,
            CONNECT_PATIENCE,
        )
        for n in range(CONNECTORS)
    ]
    for process in generators:
        expect(process, "armed")
    waited = quiet()
    before, busy0, wall0, queues0 = server.times(), boxTimes()[0], time.monotonic(), tcpQueues()
    for process in generators:
        process.send_signal(signal.SIGUSR1)
    for process in generators:
        expect(process, "done")
    time.sleep(0.3)  # the server's work for the last answers (its log lines) ends
    after, busy1, wall1, queues1 = server.times(), boxTimes()[0], time.monotonic(), tcpQueues()
    for process in generators:
        process.terminate()
    reports = [result(p) for p in generators]
    total = {key: sum(r[key] for r in reports) for key in CONNECT_COUNTS}
    refusals: dict[str, int] = {}
    for report in reports:
        for reason, count in report["refusals"].items():
            refusals[reason] = refusals.get(reason, 0) + count
    handshakes = [ms for r in reports for ms in r["handshake_ms"]]
    waits = [ms for r in reports for ms in r["wait_ms"]]
    user, system = after[0] - before[0], after[1] - before[1]
    cpu, generatorCpu, wall = user + system, sum(r["cpu"] for r in reports), wall1 - wall0
    # From the first client's start to the last one connected, over every generator.
    span = max(r["last_connected"] for r in reports) - min(r["started"] for r in reports)
    connected = total["connected"]
    return {
        "name": name,
        "clients": share * CONNECTORS,
        "in_flight": parallel or "all",
        **total,
        "refusals": refusals,
        **{f"kernel_{count}": queues1[count] - queues0[count] for count in TCP_QUEUES},
        "seconds": round(span, 2),
        "connects_per_s": round(connected / max(span, 1e-3)),
        "handshake_p50_ms": round(percentile(handshakes, 50), 2),
        "handshake_p99_ms": round(percentile(handshakes, 99), 2),
        "handshake_max_ms": round(max(handshakes, default=float("nan")), 2),
        # From a client's first try, its refused ones included.
        "client_wait_p99_ms": round(percentile(waits, 99), 2),
        "daemon_cpu_s": round(cpu, 2),
        "daemon_system_cpu_share": round(system / max(cpu, 0.01), 2),
        "daemon_cpu_ms_per_connect": round(cpu * 1000 / max(connected, 1), 3),
        "daemon_cores": round(cpu / wall, 2),
        "generator_cpu_s": round(generatorCpu, 2),
        "generator_cpu_ms_per_connect": round(generatorCpu * 1000 / max(connected, 1), 3),
        # What the machine did besides the server and the generators.
        "other_cores": round((busy1 - busy0 - cpu - generatorCpu) / wall, 2),
        "waited_for_quiet_s": round(waited, 1),
    }


def expect(process: subprocess.Popen, word: str) -> None:
    """
    Wait for a generator's next line, which must say WORD.
    """
    line = process.stdout.readline()
    if word not in line:
        raise RuntimeError(f"a load generator said {line!r}, not {word!r}")


#: Seconds between the accounts phase's PINGs: 10 a second, half the
#: daemon's default --client-message-rate (a faster client is closed, 1008).
PING_INTERVAL = 0.1


def accounts(daemon: Server, seconds: float, rounds: int) -> dict:
    """
    Logins at the daemon's bcrypt cost against the bound cores / one hash,
    with a WebSocket client timing PING -> PONG meanwhile. A login or a
    PONG that never comes ends its generator, reported in *_failure.
    """
    import urllib.request

    url = f"http://127.0.0.1:{daemon.port}"

    def post(path: str, body: dict) -> bytes:
        request = urllib.request.Request(url + path, data=json.dumps(body).encode())
        return urllib.request.urlopen(request).read()

    post("/users", {"User": "bench", "Password": "benchmark password", "Email": "b@example.com"})
    hashed = bcrypt.hashpw(b"benchmark password", bcrypt.gensalt(rounds))
    samples = []
    for _ in range(3):
        t = time.perf_counter()
        bcrypt.checkpw(b"benchmark password", hashed)
        samples.append(time.perf_counter() - t)
    oneHash = min(samples)
    cores = os.cpu_count() or 1
    pinger = start("ping", daemon.port, seconds, PING_INTERVAL)
    logins = start("login", daemon.port, seconds)
    done = result(logins)
    pings = result(pinger)
    delays = [ns / 1e6 for ns in pings["delays"]]
    rate = done["logins"] / done["seconds"]
    bound = cores / oneHash
    failures = {
        f"{what}_failure": report["failure"]
        for what, report in (("login", done), ("ping", pings))
        if "failure" in report
    }
    for failure in failures.values():
        print(f"  accounts: {failure}", flush=True)
    return {
        "name": "accounts",
        "bcrypt_rounds": rounds,
        "logins": done["logins"],
        "logins_per_s": round(rate, 2),
        "bound_per_s": round(bound, 2),
        "fraction_of_bound": round(rate / bound, 3),
        "one_hash_ms": round(oneHash * 1000, 1),
        "pings": len(delays),
        "ping_p50_ms": round(percentile(delays, 50), 2),
        "ping_p99_ms": round(percentile(delays, 99), 2),
        "generator_cpu_s": done["cpu"],
        **failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, help="per relay phase (default 10; 6 with --cluster)"
    )
    parser.add_argument("--idle", type=int, default=10000, help="idle connections to hold")
    parser.add_argument(
        "--connects", type=int, default=10000, help="the connect phase's WebSocket connects"
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=100,
        help="the connect phase's connects under way at a time (closed loops)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=18000,
        help="the connect phase's clients arriving all at once, as after a restart",
    )
    parser.add_argument(
        "--baseline",
        metavar="BINARY",
        help="the batch, single, connect and idle phases against this build of the Go "
        "original too, each as its user starts it, rounds alternating which goes first",
    )
    parser.add_argument(
        "--json",
        help="default bench/last-run.json; bench/cluster-results.json with --cluster, "
        "bench/reuseport-results.json with --reuseport",
    )
    parser.add_argument(
        "--only", help="comma-separated phases: batch,single,1k,connect,idle,accounts"
    )
    parser.add_argument(
        "--runs",
        "--rounds",
        type=int,
        help="repeat (default 1; 3 with --cluster, --reuseport or --baseline); the JSON "
        "then has each figure's median, min and max",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the two-node phases over a redis-server of our own instead (SPEC §6)",
    )
    parser.add_argument(
        "--reuseport",
        action="store_true",
        help="the whole box's throughput: one daemon, then two with --redis, on one "
        "reuseport: port",
    )
    parser.add_argument(
        "--cluster-disconnects",
        action="store_true",
        help="8,000 clients of a two-node cluster's node A closing at once, with cross-node "
        "/send meanwhile: does A lose Redis, do messages fail",
    )
    parser.add_argument(
        "--webhook",
        action="store_true",
        help="the batch and single phases without a webhook, with one answering and with "
        "one never answering, under WebSocket churn (SPEC §7.2)",
    )
    parser.add_argument(
        "--churn", type=float, default=1000, help="--webhook: WebSocket clients opened a second"
    )
    parser.add_argument(
        "--others",
        type=float,
        default=OTHERS,
        help="cores the rest of the machine may use in a window before it is measured "
        f"again (default {OTHERS})",
    )
    parser.add_argument("--clients", type=int, default=1000, help="--reuseport: WebSocket clients")
    parser.add_argument(
        "--loops", type=int, default=96, help="--reuseport: concurrent closed /send loops"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10000,
        help="--cluster: messages/s of the fixed-rate phases (0: none); "
        "--cluster-disconnects: of its cross-node sends",
    )
    parser.add_argument(
        "--redis-socket",
        action="store_true",
        help="--cluster, --reuseport: Redis on a unix socket rather than a loopback port",
    )
    parser.add_argument(
        "--logger",
        default="socktopus_tw.logs.text",
        help="twistd's --logger for the daemon ('twistd': its default)",
    )
    options = parser.parse_args()
    raiseFileLimit(max(options.burst, options.connects, options.idle, CLOSING) + 1024)
    if options.baseline:
        baselineMain(options)
        return
    if options.cluster:
        clusterMain(options)
        return
    if options.reuseport:
        boxMain(options)
        return
    if options.cluster_disconnects:
        disconnectsMain(options)
        return
    if options.webhook:
        webhookMain(options)
        return
    options.seconds = options.seconds or 10.0
    options.runs = options.runs or 1
    options.json = options.json or os.path.join(HERE, "last-run.json")
    phases = (options.only or "batch,single,1k,connect,idle,accounts").split(",")

    runs = [runPhases(phases, options) for _ in range(options.runs)]
    report = {
        **runFacts(),
        "logger": options.logger,
        "tree": treeState(),
    }
    if options.runs == 1:
        report["results"] = runs[0]
    else:
        report[f"median_of_{options.runs}"] = summarise(runs)
        report["runs"] = runs
    with open(options.json, "w") as f:
        json.dump(report, f, indent=2)
    for entry in runs[-1]:
        print(f"\n{entry['name']}")
        for key, value in entry.items():
            if key != "name":
                print(f"  {key:34} {value}")
    if options.runs > 1:
        printTargets(report[f"median_of_{options.runs}"], options.runs)
    print(f"\nwritten to {options.json}")


#: The relay phases: (name, messages per request, bytes per message).
RELAY_PHASES = {
    "batch": ("relay, batch 100 x 64 B", 100, 64),
    "single": ("relay, single x 64 B", 1, 64),
    "1k": ("relay, batch 100 x 1 KiB", 100, 1024),
}
#: The connect phase's two parts.
CONNECT, BURST = "connect, closed loops", "connect, all at once"


def phaseGroups(phases: list[str], options: argparse.Namespace) -> list[list[Any]]:
    """
    The phases of PHASES (accounts aside), as functions of a server, in
    groups that share one: the relay phases one; each part of the connect
    phase (its clients come to a server that has had none, as after a
    restart) and the idle phase one of their own.
    """
    relays = [
        functools.partial(relay, name=name, batch=batch, size=size, seconds=options.seconds)
        for key, (name, batch, size) in RELAY_PHASES.items()
        if key in phases
    ]
    groups = [relays] if relays else []
    if "connect" in phases:
        groups.append(
            [
                functools.partial(
                    connects, name=CONNECT, clients=options.connects, parallel=options.in_flight
                )
            ]
        )
        groups.append([functools.partial(connects, name=BURST, clients=options.burst, parallel=0)])
    if "idle" in phases:
        groups.append([functools.partial(idleMemory, connections=options.idle)])
    return groups


def runPhases(phases: list[str], options: argparse.Namespace) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for group in phaseGroups(phases, options):
            daemon = Daemon(workdir, logger=options.logger)
            try:
                for phase in group:
                    results.append(again(functools.partial(phase, daemon), others=options.others))
            finally:
                daemon.stop()
        if "accounts" in phases:
            daemon = Daemon(workdir, "--bcrypt-rounds", "12", logger=options.logger)
            try:
                results.append(accounts(daemon, min(options.seconds, 8.0), 12))
            finally:
                daemon.stop()
    return results


def summarise(runs: list[list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """
    The median, minimum and maximum of every figure over the runs.
    """
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for entry in runs[0]:
        name = entry["name"]
        same = [e for run in runs for e in run if e["name"] == name]
        summary[name] = {
            key: {
                "median": statistics.median(e[key] for e in same),
                "min": min(e[key] for e in same),
                "max": max(e[key] for e in same),
            }
            for key, value in entry.items()
            if isinstance(value, int | float)
        }
    return summary


#: The issue's targets: (phase, figure, the target, True when higher is better).
TARGETS = [
    ("relay, batch 100 x 64 B", "daemon_cpu_ms_per_1000_messages", 9, False),
    ("relay, single x 64 B", "daemon_cpu_ms_per_1000_requests", 50, False),
    ("idle memory", "rss_per_connection_kib", 12, False),
    ("relay, batch 100 x 64 B", "latency_p99_ms", 10, False),
    ("accounts", "fraction_of_bound", 0.9, True),
    ("accounts", "ping_p99_ms", 50, False),
]


def printTargets(summary: dict, runs: int) -> None:
    print(f"\nmedian of {runs} (min-max) against the targets")
    for phase, figure, target, higher in TARGETS:
        if phase not in summary:
            continue
        value = summary[phase][figure]
        met = value["median"] >= target if higher else value["median"] <= target
        print(
            f"  {phase:26} {figure:34} {value['median']:>9} ({value['min']}-{value['max']})"
            f"  target {'>=' if higher else '<='} {target}: {'met' if met else 'not met'}"
        )


#: --cluster's placements: (name, receivers as (node, first, count, step),
#: senders as (node, loops)); four loops in all, as the single-node phase.
PLACEMENTS = [
    ("single", [("A", 0, 500, 1), ("A", 500, 500, 1)], [("A", 4)]),
    ("A->B", [("A", 0, 500, 1), ("A", 500, 500, 1)], [("B", 4)]),
    # A holds r0, r1, r4, r5, ...; B r2, r3, r6, r7, ...: each sender loop
    # owns every other id, so every batch is half A's, half B's.
    (
        "spread",
        [("A", 0, 250, 4), ("A", 1, 250, 4), ("B", 2, 250, 4), ("B", 3, 250, 4)],
        [("A", 2), ("B", 2)],
    ),
]

DESCRIPTIONS = {
    "single": "one daemon without --redis: the batch phase (1,000 clients, 4 sender loops)",
    "A->B": "1,000 clients on node A, every request posted to node B (4 loops)",
    "spread": "500 clients on each node (ids interleaved), 2 loops posting to each node; "
    "every batch is half local, half for the other node",
}


def phaseName(placement: str, rate: float) -> str:
    return f"{placement}, {f'{rate:g}/s' if rate else 'max'}"


def clusterEntry(name: str, raw: dict, rate: float) -> dict:
    """
    One --cluster phase's figures; CPU per 1,000 messages delivered.
    """
    delivered, wall = raw["delivered"], raw["seconds"]
    cpu = {k: user + system for k, (user, system) in raw["cpu"].items()}
    nodes = sum(v for k, v in cpu.items() if k != "redis")

    def perThousand(seconds: float) -> float:
        return round(seconds * 1e6 / max(delivered, 1), 2)

    entry = {
        "name": name,
        "rate_target_per_s": rate,
        "seconds": round(wall, 2),
        "sending_seconds": round(raw["sending"], 2),
        "requests": raw["requests"],
        "sent": raw["sent"],
        "failed": raw["failed"],
        "delivered": delivered,
        # Answered as succeeded but never seen by a client (negative: more
        # arrived than the answers said).
        "lost": raw["sent"] - raw["failed"] - delivered,
        "late_requests": raw["late"],
        # Over the senders' time, not the window (which has their start-up
        # and the settling in it), so a fixed rate reads as itself.
        "delivered_per_s": round(delivered / raw["sending"]),
        "latency_p50_ms": round(percentile(raw["latencies"], 50), 2),
        "latency_p99_ms": round(percentile(raw["latencies"], 99), 2),
    }
    for key in ("node_a", "node_b", "redis"):
        if key in cpu:
            entry[f"cpu_ms_per_1000_{key}"] = perThousand(cpu[key])
    entry["cpu_ms_per_1000_nodes"] = perThousand(nodes)
    entry["cpu_ms_per_1000_nodes_and_redis"] = perThousand(nodes + cpu.get("redis", 0))
    entry["generator_cpu_s"] = round(raw["generator_cpu"], 2)
    # What the machine did besides the daemons, Redis and the generators
    # (softirq, this script, someone else's test run), in cores.
    entry["other_cores"] = round(
        (raw["box_busy"] - sum(cpu.values()) - raw["generator_cpu"]) / wall, 2
    )
    entry["waited_for_quiet_s"] = round(raw["waited_for_quiet"], 1)
    return entry


def clusterRound(options: argparse.Namespace) -> list[dict]:
    """
    One round: the single node's phases, then two nodes' over a fresh Redis.
    """
    rates = [0.0] + ([options.rate] if options.rate else [])
    results = []

    def phases(placement: str, nodes: dict[str, Daemon], watched: dict) -> None:
        _, listeners, senders = next(p for p in PLACEMENTS if p[0] == placement)
        for rate in rates:
            name = phaseName(placement, rate)
            raw = functools.partial(
                measure,
                watched,
                [(nodes[node].port, *rest) for node, *rest in listeners],
                [(nodes[node].port, loops) for node, loops in senders],
                100,
                64,
                options.seconds,
                rate,
            )
            results.append(
                again(raw, functools.partial(clusterEntry, name, rate=rate), options.others)
            )

    with tempfile.TemporaryDirectory() as workdir:
        with contextlib.ExitStack() as stack:
            single = Daemon(workdir, logger=options.logger)
            stack.callback(single.stop)
            phases("single", {"A": single}, {"node_a": single})
        with contextlib.ExitStack() as stack:
            redis = Redis(workdir, unix=options.redis_socket)
            stack.callback(redis.stop)
            # One after the other: the first migrates the shared database.
            a = Daemon(workdir, "--redis", redis.url, logger=options.logger)
            stack.callback(a.stop)
            b = Daemon(workdir, "--redis", redis.url, logger=options.logger)
            stack.callback(b.stop)
            watched = {"node_a": a, "node_b": b, "redis": redis}
            for placement in ("A->B", "spread"):
                phases(placement, {"A": a, "B": b}, watched)
    for entry in results:
        if not entry["name"].startswith("single"):
            alone = next(
                e for e in results if e["name"] == phaseName("single", entry["rate_target_per_s"])
            )
            base = max(alone["cpu_ms_per_1000_nodes"], 0.01)
            entry["nodes_vs_single"] = round(entry["cpu_ms_per_1000_nodes"] / base, 2)
            entry["nodes_and_redis_vs_single"] = round(
                entry["cpu_ms_per_1000_nodes_and_redis"] / base, 2
            )
    return results


def clusterMain(options: argparse.Namespace) -> None:
    options.seconds = options.seconds or 6.0
    options.runs = options.runs or 3
    options.json = options.json or os.path.join(HERE, "cluster-results.json")
    rounds = []
    for n in range(options.runs):
        print(f"round {n + 1} of {options.runs}", flush=True)
        rounds.append(clusterRound(options))
    summary = summarise(rounds)
    version = subprocess.run(
        [REDIS_SERVER, "--version"], capture_output=True, text=True
    ).stdout.strip()
    report = {
        **runFacts(),
        "logger": options.logger,
        "generators_on_uvloop": importlib.util.find_spec("uvloop") is not None,
        "redis": {
            "server": version,
            "transport": "unix socket" if options.redis_socket else "tcp loopback",
        },
        "seconds_per_phase": options.seconds,
        "batch": "100 x 64 B",
        "phases": DESCRIPTIONS,
        f"median_of_{options.runs}": summary,
        "rounds": rounds,
    }
    with open(options.json, "w") as f:
        json.dump(report, f, indent=2)
    printCluster(summary, rounds)
    print(f"\nwritten to {options.json}")


#: The table's columns: (heading, figure, width).
COLUMNS = [
    ("msgs/s", "delivered_per_s", 8),
    ("p50 ms", "latency_p50_ms", 7),
    ("p99 ms", "latency_p99_ms", 7),
    ("A", "cpu_ms_per_1000_node_a", 6),
    ("B", "cpu_ms_per_1000_node_b", 6),
    ("A+B", "cpu_ms_per_1000_nodes", 6),
    ("Redis", "cpu_ms_per_1000_redis", 6),
    ("A+B/1", "nodes_vs_single", 6),
    ("+R/1", "nodes_and_redis_vs_single", 6),
    ("failed", "failed", 7),
    ("lost", "lost", 6),
]


def printCluster(summary: dict, rounds: list[list[dict]]) -> None:
    print(
        f"\nmedian of {len(rounds)}; CPU in ms per 1,000 delivered messages; "
        "A+B/1: the nodes' CPU over the single node's at the same rate"
    )
    print(f"  {'phase':16}" + "".join(f"{h:>{w + 1}}" for h, _, w in COLUMNS))
    for name, figures in summary.items():
        cells = []
        for _, key, width in COLUMNS:
            value = figures.get(key, {}).get("median")
            cells.append(f"{'-' if value is None else f'{value:g}':>{width + 1}}")
        print(f"  {name:16}" + "".join(cells))
    print("\nagainst the goals (median, min-max)")
    for name, figures in summary.items():
        if name.startswith("single"):
            continue
        goals = [("nodes_vs_single", 2, "<=")]
        if figures["rate_target_per_s"]["median"]:
            goals.append(("latency_p99_ms", 20, "<"))
        for key, target, sense in goals:  # the issue's: at most 2x, p99 under 20 ms
            value = figures[key]
            met = value["median"] <= target if sense == "<=" else value["median"] < target
            print(
                f"  {name:16} {key:18} {value['median']:>8g} ({value['min']:g}-{value['max']:g})"
                f"  {sense} {target}: {'met' if met else 'not met'}"
            )
        rate = figures["rate_target_per_s"]["median"]
        if rate:
            reached = figures["delivered_per_s"]["median"]
            if reached < 0.95 * rate:
                print(f"  {name:16} only {reached:g} msgs/s reached: the p99 is not at {rate:g}/s")
    # Every recipient is connected throughout: any failure is a wrong answer.
    wrong = [
        (number, entry)
        for number, results in enumerate(rounds, 1)
        for entry in results
        if entry["failed"] or entry["lost"]
    ]
    if wrong:
        print("\nfailed or lost messages (every recipient was connected)")
    for number, entry in wrong:
        print(
            f"  round {number}, {entry['name']}: {entry['failed']} failed, "
            f"{entry['lost']} lost of {entry['sent']} sent"
        )


#: Seconds between --reuseport's generator's reads of its clients (see boxLoad).
SWEEP = 0.05


#: --reuseport's configurations: (name, daemons). One daemon runs without
#: --redis, as a single-node user runs it; two share a Redis of our own.
BOXES = [("one daemon", 1), ("two daemons", 2)]


def sockets(pid: int) -> int:
    """
    How many sockets a process holds open.
    """
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
    return count


def boxLoad(
    pipe: Any, port: int, clients: int, loops: int, batch: int, size: int, seconds: float
) -> None:
    """
    --reuseport's load generator, in a process of its own: CLIENTS WebSocket
    clients, then LOOPS closed /send loops (batches of BATCH messages of
    SIZE bytes, recipients cycling over every client) for SECONDS, all on
    PORT, so the kernel spreads both over the daemons sharing it.

    Built to cost the box as little as it can, since it shares the cores
    with what it measures: plain sockets under one epoll (no event loop
    library), requests built once, answers looked at in bytes, and frames
    counted, not parsed: every frame a client can get here is one DATA
    frame of the same length (the daemon sends no pings), so a client's
    frames are its bytes over that length, and a remainder says otherwise.
    """
    from loadgen import handshake

    from socktopus_tw.relay.tokens import makeToken

    ids = [f"r{n}" for n in range(clients)]
    now = int(time.time() * 1000)
    receiving: dict[int, socket.socket] = {}
    # A few hundred handshakes in flight at a time: the listen backlog
    # holds them, and set-up takes a second rather than one round trip each.
    for first in range(0, clients, 250):
        chunk = ids[first : first + 250]
        opened = [socket.create_connection(("127.0.0.1", port)) for _ in chunk]
        for s, connectionId in zip(opened, chunk, strict=True):
            s.sendall(handshake(port, makeToken(APP, SECRET, connectionId, now)))
        for s in opened:
            head = b""
            while b"\r\n\r\n" not in head:
                data = s.recv(4096)
                if not data:
                    raise RuntimeError("a client was closed during its handshake")
                head += data
            if not head.startswith(b"HTTP/1.1 101") or not head.endswith(b"\r\n\r\n"):
                raise RuntimeError(head[:200].decode("latin-1"))
            receiving[s.fileno()] = s
    pipe.send(("clients", len(receiving)))
    pipe.recv()

    prefix = json.dumps({"secretName": APP, "secret": SECRET})[:-1] + ',"messages":['
    content = "x" * size
    requests = []
    for first in range(0, clients * batch // math.gcd(clients, batch), batch):
        body = (
            prefix
            + ",".join(
                f'{{"recipient":"{ids[(first + n) % clients]}","content":"{content}"}}'
                for n in range(batch)
            )
            + "]}"
        ).encode()
        requests.append(
            b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
    sending = {}
    for n in range(loops):
        s = socket.create_connection(("127.0.0.1", port))
        # [socket, answer so far, its full length once known, next request]
        sending[s.fileno()] = [s, bytearray(), 0, n % len(requests)]
    pipe.send(("senders", len(sending)))
    pipe.recv()

    frame = 2 + len(b"DATA:") + size  # a server frame's header is 2 bytes below 126
    assert frame - 2 < 126
    received = [0] * (max([*receiving, *sending]) + 1)
    # Two polls: the loops' at once, so each answer is followed by the next
    # request without delay; the clients' only every SWEEP seconds, so a
    # read takes all the frames that came meanwhile: reads (and the ACKs
    # they cause, both costs of the box) stay about one per client per
    # sweep however many messages come. The daemons do not notice: their
    # writes go to the clients' socket buffers, far from full.
    clientsPoll, loopsPoll = select.epoll(len(receiving)), select.epoll(len(sending))
    for fd in receiving:
        clientsPoll.register(fd, select.EPOLLIN)
    for fd in sending:
        loopsPoll.register(fd, select.EPOLLIN)
    buffer = bytearray(65536)
    done = failed = closed = 0
    mark = cpuTimes(os.getpid())
    started = time.monotonic()
    deadline, sweep, drained, sendingSeconds = started + seconds, started, 0.0, 0.0
    for state in sending.values():
        state[0].sendall(requests[state[3]])
    waiting = len(sending)
    while True:
        now = time.monotonic()
        if now >= sweep:
            ready = clientsPoll.poll(0)
            for fd, _ in ready:
                n = receiving[fd].recv_into(buffer)
                if not n:
                    clientsPoll.unregister(fd)
                    closed += 1
                received[fd] += n
            sweep = now + SWEEP
            # Done once the frames on their way have had time to come, and
            # a sweep found none left.
            if drained and now >= drained and not ready:
                break
        if not waiting:
            if not drained:
                sendingSeconds, drained = now - started, now + 0.5
                # Every frame is written once its request is answered (a
                # node answers for another's only once that one wrote them):
                # the daemons' work ends here, and so does their window.
                pipe.send(("stopped", sendingSeconds))
            time.sleep(max(0.0, sweep - now))
            continue
        for fd, _ in loopsPoll.poll(max(0.0, sweep - now)):
            state = sending[fd]
            s, answer = state[0], state[1]
            data = s.recv(65536)
            if not data:
                raise RuntimeError("the daemon closed a /send connection")
            answer += data
            if not state[2]:
                end = answer.find(b"\r\n\r\n")
                if end < 0:
                    continue
                if not answer.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(bytes(answer[:300]).decode("latin-1"))
                length = answer[:end].lower().split(b"content-length:")[1].split(b"\r\n")[0]
                state[2] = end + 4 + int(length)
            if len(answer) < state[2]:
                continue
            # As loadgen's senders count: "failed" comes last in the answer.
            if not answer.endswith(b'"failed":[]}'):
                failed += answer[answer.rfind(b'"failed":') :].count(b'"recipient"')
            done += 1
            del answer[:]
            state[2] = 0
            if time.monotonic() < deadline:
                state[3] = (state[3] + 1) % len(requests)
                s.sendall(requests[state[3]])
            else:
                waiting -= 1
    user, system = cpuTimes(os.getpid())
    pipe.send(
        (
            "result",
            {
                "requests": done,
                "sent": done * batch,
                "failed": failed,
                "delivered": sum(received[fd] // frame for fd in receiving),
                # Clients whose bytes are not whole frames: not all were DATA.
                "odd_clients": sum(1 for fd in receiving if received[fd] % frame),
                "closed": closed,
                "sending": sendingSeconds,
                "generator_cpu": user + system - sum(mark),
            },
        )
    )


def boxMeasure(watched: dict[str, Daemon | Redis], port: int, options: argparse.Namespace) -> dict:
    """
    One --reuseport window, from the first request to the last answer: the
    generator's figures, every WATCHED process's CPU, the machine's, and
    how the kernel spread the clients and the /send loops over the daemons.
    (The generator's own CPU also has its last reads of the clients, half
    a second after the window, in it.)
    """
    daemons = {k: p for k, p in watched.items() if isinstance(p, Daemon)}
    baseline = {k: sockets(d.process.pid) for k, d in daemons.items()}
    pipe, theirs = multiprocessing.Pipe()
    generator = multiprocessing.get_context("fork").Process(
        target=boxLoad,
        args=(theirs, port, options.clients, options.loops, 100, 64, options.seconds),
    )
    generator.start()

    def answer() -> Any:
        # A generator that failed says nothing more: do not wait for it forever.
        while not pipe.poll(1.0):
            if not generator.is_alive():
                raise RuntimeError("the load generator failed (its traceback is above)")
        return pipe.recv()

    answer()
    clients = {k: sockets(d.process.pid) - baseline[k] for k, d in daemons.items()}
    # Before the loops connect: the daemons close an HTTP connection that
    # sends no request for their idle timeout.
    waited = quiet()
    pipe.send("senders")
    answer()
    time.sleep(0.5)  # the daemons accept the loops' connections; set-up settles
    loops = {k: sockets(d.process.pid) - baseline[k] - clients[k] for k, d in daemons.items()}
    before, box0, wall0 = {k: p.times() for k, p in watched.items()}, boxTimes(), time.monotonic()
    pipe.send("go")
    answer()
    after, box1, wall1 = {k: p.times() for k, p in watched.items()}, boxTimes(), time.monotonic()
    _, report = answer()
    generator.join(30)
    return {
        **report,
        "seconds": wall1 - wall0,
        "cpu": {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in watched},
        "box": [b - a for a, b in zip(box0, box1, strict=True)],
        "clients": clients,
        "loops": loops,
        "waited_for_quiet": waited,
    }


def boxEntry(name: str, raw: dict) -> dict:
    """
    One --reuseport configuration's figures; CPU per 1,000 messages delivered.
    """
    delivered, wall = raw["delivered"], raw["seconds"]
    cpu = {k: user + system for k, (user, system) in raw["cpu"].items()}
    daemons = sum(v for k, v in cpu.items() if k != "redis")
    busy, stolen, total = raw["box"]

    def perThousand(seconds: float) -> float:
        return round(seconds * 1e6 / max(delivered, 1), 2)

    entry = {
        "name": name,
        "seconds": round(wall, 2),
        "sending_seconds": round(raw["sending"], 2),
        "requests": raw["requests"],
        "sent": raw["sent"],
        "failed": raw["failed"],
        "delivered": delivered,
        "lost": raw["sent"] - raw["failed"] - delivered,
        "odd_clients": raw["odd_clients"],
        "delivered_per_s": round(delivered / raw["sending"]),
        "requests_per_s": round(raw["requests"] / raw["sending"]),
        "cpu_ms_per_1000_daemons": perThousand(daemons),
    }
    for key in ("node_a", "node_b", "redis"):
        if key in cpu:
            entry[f"cpu_ms_per_1000_{key}"] = perThousand(cpu[key])
    entry["cpu_ms_per_1000_generator"] = perThousand(raw["generator_cpu"])
    # Cores: CPU seconds over the window's wall seconds (the box has os.cpu_count()).
    entry["daemons_cores"] = round(daemons / wall, 2)
    for key in ("node_a", "node_b"):
        if key in cpu:
            entry[f"{key}_cores"] = round(cpu[key] / wall, 2)
    entry["redis_cores"] = round(cpu.get("redis", 0) / wall, 2)
    entry["generator_cores"] = round(raw["generator_cpu"] / wall, 2)
    entry["generator_cpu_s"] = round(raw["generator_cpu"], 2)
    entry["box_busy_cores"] = round(busy / wall, 2)
    entry["box_stolen_cores"] = round(stolen / wall, 2)
    entry["box_cores_counted"] = round(total / wall, 2)
    # What the machine did besides the daemons, Redis and the generator
    # (softirq, this script, someone else's test run).
    entry["other_cores"] = round((busy - sum(cpu.values()) - raw["generator_cpu"]) / wall, 2)
    entry["waited_for_quiet_s"] = round(raw["waited_for_quiet"], 1)
    for key in raw["clients"]:
        entry[f"{key}_clients"] = raw["clients"][key]
        entry[f"{key}_loops"] = raw["loops"][key]
    return entry


def boxRound(options: argparse.Namespace, order: list[tuple[str, int]]) -> list[dict]:
    """
    One round: each configuration in ORDER on a port of its own, then the
    two daemons' figures against the one daemon's of the same round.
    """
    results = []
    for name, count in order:
        with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
            arguments: tuple[str, ...] = ()
            watched: dict[str, Daemon | Redis] = {}
            if count > 1:
                redis = Redis(workdir, unix=options.redis_socket)
                stack.callback(redis.stop)
                watched["redis"] = redis
                arguments = ("--redis", redis.url)
            # The first daemon takes a free port, the others join it, one after
            # the other (the first migrates the shared database).
            port = 0
            for n in range(count):
                listen = f"reuseport:{port}:interface=127.0.0.1:backlog=4096"
                daemon = Daemon(workdir, *arguments, logger=options.logger, listen=listen)
                stack.callback(daemon.stop)
                watched[f"node_{'ab'[n]}"] = daemon
                port = daemon.port
            # Between tries, a second for the daemons to see the last clients go.
            take = functools.partial(boxMeasure, watched, port, options)
            results.append(
                again(take, functools.partial(boxEntry, name), options.others, pause=1.0)
            )
    one = next(e for e in results if e["name"] == BOXES[0][0])
    for entry in results:
        if entry is not one:
            entry["throughput_vs_one"] = round(
                entry["delivered_per_s"] / max(one["delivered_per_s"], 1), 2
            )
            entry["cpu_per_message_vs_one"] = round(
                entry["cpu_ms_per_1000_daemons"] / max(one["cpu_ms_per_1000_daemons"], 0.01), 2
            )
    # Always in BOXES's order, whichever ran first.
    return sorted(results, key=lambda e: [n for n, _ in BOXES].index(e["name"]))


def boxMain(options: argparse.Namespace) -> None:
    options.seconds = options.seconds or 10.0
    options.runs = options.runs or 3
    options.json = options.json or os.path.join(HERE, "reuseport-results.json")
    rounds, orders = [], []
    for n in range(options.runs):
        # Alternate which goes first, so a drift of the machine's speed over
        # the run (a neighbour, thermal) falls on both alike.
        order = BOXES if n % 2 == 0 else BOXES[::-1]
        orders.append([name for name, _ in order])
        print(f"round {n + 1} of {options.runs}: {', then '.join(orders[-1])}", flush=True)
        rounds.append(boxRound(options, order))
    summary = summarise(rounds)
    version = subprocess.run(
        [REDIS_SERVER, "--version"], capture_output=True, text=True
    ).stdout.strip()
    report = {
        **runFacts(),
        "logger": options.logger,
        "redis": {
            "server": version,
            "transport": "unix socket" if options.redis_socket else "tcp loopback",
        },
        "seconds_per_phase": options.seconds,
        "load": f"{options.clients} WebSocket clients and {options.loops} closed /send loops "
        "(batches of 100 x 64 B, recipients cycling over every client), all on one "
        "reuseport: port, so the kernel spreads both over the daemons; one generator "
        "process (epoll, frames counted by length)",
        "configurations": {
            "one daemon": "one daemon without --redis on reuseport:PORT",
            "two daemons": "two daemons with --redis (a redis-server of our own) "
            "on the same reuseport:PORT",
        },
        "order_of_rounds": orders,
        f"median_of_{options.runs}": summary,
        "rounds": rounds,
    }
    with open(options.json, "w") as f:
        json.dump(report, f, indent=2)
    printBox(summary, rounds)
    print(f"\nwritten to {options.json}")


#: The --reuseport table's columns: (heading, figure, width).
BOX_COLUMNS = [
    ("msgs/s", "delivered_per_s", 8),
    ("x one", "throughput_vs_one", 6),
    ("daemons", "cpu_ms_per_1000_daemons", 8),
    ("Redis", "cpu_ms_per_1000_redis", 6),
    ("gen", "cpu_ms_per_1000_generator", 6),
    ("cores: d", "daemons_cores", 9),
    ("R", "redis_cores", 5),
    ("gen", "generator_cores", 5),
    ("box", "box_busy_cores", 5),
    ("other", "other_cores", 6),
    ("failed", "failed", 7),
    ("lost", "lost", 6),
]


def printBox(summary: dict, rounds: list[list[dict]]) -> None:
    print(
        f"\nmedian of {len(rounds)}; CPU in ms per 1,000 delivered messages (daemons, "
        "Redis, the generator); cores: CPU seconds per second of the window"
    )
    print(f"  {'configuration':14}" + "".join(f"{h:>{w + 1}}" for h, _, w in BOX_COLUMNS))
    for name, figures in summary.items():
        cells = []
        for _, key, width in BOX_COLUMNS:
            value = figures.get(key, {}).get("median")
            cells.append(f"{'-' if value is None else f'{value:g}':>{width + 1}}")
        print(f"  {name:14}" + "".join(cells))
    for name, figures in summary.items():
        spread = [
            f"{node} {figures[node + '_clients']['median']:g} clients, "
            f"{figures[node + '_loops']['median']:g} loops"
            for node in ("node_a", "node_b")
            if node + "_clients" in figures
        ]
        print(f"  {name}: {'; '.join(spread)} (median)")
    figure = summary[BOXES[1][0]]["throughput_vs_one"]
    # The issue's goal: two daemons on one port deliver at least 1.6 times one's.
    print(
        f"\nagainst the goal: two daemons / one {figure['median']:g} "
        f"({figure['min']:g}-{figure['max']:g}) >= 1.6: "
        f"{'met' if figure['median'] >= 1.6 else 'not met'}"
    )
    wrong = [
        (number, entry)
        for number, results in enumerate(rounds, 1)
        for entry in results
        if entry["failed"] or entry["lost"] or entry["odd_clients"]
    ]
    if wrong:
        print("\nfailed, lost or unexpected frames (every recipient was connected)")
    for number, entry in wrong:
        print(
            f"  round {number}, {entry['name']}: {entry['failed']} failed, {entry['lost']} lost "
            f"of {entry['sent']} sent; {entry['odd_clients']} clients got other frames"
        )


#: --cluster-disconnects: the clients that close at once, in receiver
#: processes of this many each, and the clients that stay.
CLOSING, CLOSERS, STAYING = 8000, 4, 100

#: What in a node's log says it lost Redis or got it back (socktopus_tw.cluster).
REDIS_TROUBLE = re.compile(
    rb"is unreachable|answers again|Redis \S+: |Cluster step \S+ failed|could not be handled"
)


class Watcher:
    """
    Asks a node for /ready and its status (GET /?format=json) every 0.1 s in
    a thread, keeping when each answer came, its status and how long it took:
    a node whose reactor is busy answers late, one that lost Redis 503.
    """

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.samples: list[tuple[float, str, int, float, int | None]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        import http.client

        while not self.stopping.wait(0.1):
            for path in ("/ready", "/?format=json"):
                started = time.monotonic()
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    connection.request("GET", path)
                    response = connection.getresponse()
                    body = response.read()
                    status = response.status
                    connection.close()
                except OSError:
                    status, body = 0, b""
                clients = (
                    json.loads(body)["clients"] if path != "/ready" and status == 200 else None
                )
                self.samples.append((started, path, status, time.monotonic() - started, clients))

    def stop(self) -> list[tuple[float, str, int, float, int | None]]:
        self.stopping.set()
        self.thread.join(15)
        return self.samples


def disconnectsRound(options: argparse.Namespace) -> dict:
    """
    One round: a two-node cluster, STAYING clients and CLOSING more on node
    A, cross-node /send batches posted to B for the staying ones at --rate,
    and after two seconds every closing client's process killed at once, so
    A sees CLOSING connections end in the same instant. What A answered
    meanwhile, what the senders were told, what A's log says of Redis.
    """
    rate = options.rate or 2000
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        redis = Redis(workdir, unix=options.redis_socket)
        stack.callback(redis.stop)
        a = Daemon(workdir, "--redis", redis.url, logger=options.logger)
        stack.callback(a.stop)
        b = Daemon(workdir, "--redis", redis.url, logger=options.logger)
        stack.callback(b.stop)
        share = CLOSING // CLOSERS
        staying = listen([(a.port, 0, STAYING, 1)])
        closing = listen([(a.port, 1000 + n * share, share, 1) for n in range(CLOSERS)])
        time.sleep(1.0)
        quiet()
        logged = a.log.tell(), b.log.tell()
        watcher = Watcher(a.port)
        cpu0 = a.times()
        # Batches of 10 to the staying clients, all on A: every message
        # crosses from B to A through Redis.
        sender = start("send", b.port, 2, STAYING, 10, 64, options.seconds, rate)
        time.sleep(2.0)
        closedAt = time.monotonic()
        for process in closing:
            process.kill()
        for process in closing:
            process.wait()
        sent = result(sender)
        time.sleep(0.5)
        cpu1 = a.times()
        samples = watcher.stop()
        for process in staying:
            process.terminate()
        received = [result(p) for p in staying]

        def trouble(daemon: Daemon, offset: int) -> list[str]:
            daemon.log.seek(offset)
            return [
                line.decode("utf-8", "replace").rstrip()
                for line in daemon.log.read().splitlines()
                if REDIS_TROUBLE.search(line)
            ]

        troubleA, troubleB = trouble(a, logged[0]), trouble(b, logged[1])
    after = [s for s in samples if s[0] >= closedAt]
    ready = [s for s in after if s[1] == "/ready"]
    counted = [s for s in after if s[4] is not None]
    drained = next((s[0] + s[3] - closedAt for s in counted if s[4] <= STAYING), None)
    latencies = [ns / 1e6 for r in received for ns in r["latencies"]]
    delivered = sum(r["received"] for r in received)
    return {
        "name": "8,000 clients closing at once on node A",
        "clients_closing": CLOSING,
        "clients_staying": STAYING,
        "rate_target_per_s": rate,
        "requests": sent["requests"],
        "sent": sent["sent"],
        "failed": sent["failed"],
        "delivered": delivered,
        "lost": sent["sent"] - sent["failed"] - delivered,
        "late_requests": sent["late"],
        "latency_p50_ms": round(percentile(latencies, 50), 2),
        "latency_p99_ms": round(percentile(latencies, 99), 2),
        "latency_max_ms": round(max(latencies, default=float("nan")), 2),
        # From the kill to A's status first counting only the staying clients.
        "a_counted_the_closes_after_s": None if drained is None else round(drained, 2),
        "a_ready_not_200": sum(1 for s in ready if s[2] != 200),
        "a_ready_slowest_ms": round(max((s[3] for s in ready), default=0) * 1000, 1),
        "a_cpu_s": round(sum(cpu1) - sum(cpu0), 2),
        "a_logged_redis_trouble": len(troubleA),
        "b_logged_redis_trouble": len(troubleB),
        "a_log": troubleA[:20],
        "b_log": troubleB[:20],
    }


def disconnectsMain(options: argparse.Namespace) -> None:
    options.seconds = options.seconds or 8.0
    options.runs = options.runs or 3
    rounds = []
    for n in range(options.runs):
        print(f"round {n + 1} of {options.runs}", flush=True)
        rounds.append(disconnectsRound(options))
    report = {
        **runFacts(),
        "logger": options.logger,
        f"median_of_{options.runs}": summarise([[r] for r in rounds]),
        "rounds": rounds,
    }
    if options.json:
        with open(options.json, "w") as f:
            json.dump(report, f, indent=2)
    for number, entry in enumerate(rounds, 1):
        print(f"\nround {number}: {entry['name']}")
        for key, value in entry.items():
            if key not in ("name", "a_log", "b_log"):
                print(f"  {key:34} {value}")
        for line in entry["a_log"] + entry["b_log"]:
            print(f"  log: {line}")
    trouble = sum(r["a_logged_redis_trouble"] for r in rounds)
    failed = sum(r["failed"] for r in rounds)
    print(
        f"\nnode A logged Redis trouble {trouble} times in {len(rounds)} rounds; "
        f"{failed} cross-node messages failed (every recipient was connected)"
    )
    if options.json:
        print(f"written to {options.json}")


#: --webhook's configurations: (key, description) and its phases: (name,
#: batch; 0: the churn alone, no /send).
HOOK_CONFIGS = [
    ("a", "no webhook"),
    ("b", "webhook answering 204"),
    ("c", "webhook never answering"),
]
#: (a+): (a)'s daemon under (b)'s churn, to tell the webhook's cost to /send
#: from the churn's own interference (measured after (a)'s windows).
HOOK_NAMES = {**dict(HOOK_CONFIGS), "a+": "no webhook, the same churn"}
HOOK_PHASES = [("churn alone", 0), ("batch 100 x 64 B", 100), ("single x 64 B", 1)]

#: What the webhook receiver counts (in a shared array), and the churn.
HOOK_FIELDS = ("posts", "events", "connect", "message", "disconnect", "client", "bytes", "accepted")
CHURN_FIELDS = ("opened", "closed", "failed", "messages", "skipped", "open_now")


def hookServe(listener: socket.socket, answer: bool, counts: Any) -> None:
    """
    --webhook's receiver, in a process of its own: plain sockets under one
    epoll, HTTP/1.1 keep-alive, each POST's events counted in its body's
    bytes (not parsed, the signature not checked), answered 204 at once, or
    (ANSWER false) read and never answered.
    """
    listener.setblocking(False)
    poll = select.epoll()
    poll.register(listener.fileno(), select.EPOLLIN)
    peers: dict[int, tuple[socket.socket, bytearray]] = {}
    reply = b"HTTP/1.1 204 No Content\r\n\r\n"
    marks = [b'"type":"connect"', b'"type":"message"', b'"type":"disconnect"', b'"reason":"client"']
    while True:
        for fd, _ in poll.poll():
            if fd == listener.fileno():
                with contextlib.suppress(BlockingIOError):
                    while True:
                        peer, _ = listener.accept()
                        peer.setblocking(False)
                        peers[peer.fileno()] = (peer, bytearray())
                        poll.register(peer.fileno(), select.EPOLLIN)
                        counts[7] += 1
                continue
            peer, buffer = peers[fd]
            try:
                data = peer.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                poll.unregister(fd)
                peer.close()
                del peers[fd]
                continue
            counts[6] += len(data)
            buffer += data
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buffer[:end]).lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
                if len(buffer) < end + 4 + length:
                    break
                body = bytes(buffer[end + 4 : end + 4 + length])
                del buffer[: end + 4 + length]
                counts[0] += 1
                for n, mark in enumerate(marks, 2):
                    found = body.count(mark)
                    counts[n] += found
                    if n < 5:  # connect, message, disconnect: the events
                        counts[1] += found
                if answer:
                    peer.send(reply)  # 27 bytes to an idle socket: never short


class HookReceiver:
    """
    --webhook's receiver process (hookServe) on a free loopback port.
    """

    def __init__(self, answer: bool) -> None:
        context = multiprocessing.get_context("fork")
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self.answer = answer
        self.counts = context.Array("q", len(HOOK_FIELDS), lock=False)
        self.process = context.Process(
            target=hookServe, args=(listener, answer, self.counts), daemon=True
        )
        self.process.start()
        listener.close()

    def times(self) -> tuple[float, float]:
        return cpuTimes(self.process.pid)

    def read(self) -> dict[str, int]:
        return dict(zip(HOOK_FIELDS, self.counts, strict=True))

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


def churnLoad(port: int, rate: float, counts: Any, active: Any) -> None:
    """
    --webhook's churn, in a process of its own: while ACTIVE, RATE new
    WebSocket clients a second (ids unique to this process), each sending
    one DATA:x and a close frame once upgraded, then waiting for the daemon
    to end the connection. Plain sockets under one epoll, non-blocking
    connects; a slot more than 0.1 s late is skipped (and counted), not
    made up in a burst.
    """
    import errno

    from loadgen import handshake, maskedText

    from socktopus_tw.relay.tokens import makeToken

    poll = select.epoll()
    # fd -> [socket, stage (0 connecting, 1 upgrading, 2 closing), bytes so far]
    peers: dict[int, list] = {}
    tail = maskedText(b"DATA:x") + bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])  # close 1000
    interval, prefix, number, due = 1.0 / rate, f"churn{os.getpid()}-", 0, None

    def end(fd: int, field: int) -> None:
        peer = peers.pop(fd)[0]
        poll.unregister(fd)
        peer.close()
        counts[field] += 1

    while True:
        now = time.monotonic()
        if active.value:
            if due is None:
                due = now
            elif due < now - 0.1:
                skipped = int((now - 0.1 - due) / interval)
                counts[4] += skipped
                due += skipped * interval
            while due <= now:
                due += interval
                peer = socket.socket()
                peer.setblocking(False)
                if peer.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
                    peer.close()
                    counts[2] += 1
                    continue
                peers[peer.fileno()] = [peer, 0, b""]
                poll.register(peer.fileno(), select.EPOLLOUT)
            timeout = max(0.0, due - now)
        else:
            due, timeout = None, 0.05
        for fd, _ in poll.poll(timeout):
            state = peers[fd]
            peer = state[0]
            if state[1] == 0:
                if peer.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    end(fd, 2)
                    continue
                stamp = int(time.time() * 1000)
                peer.send(handshake(port, makeToken(APP, SECRET, f"{prefix}{number}", stamp)))
                number += 1
                state[1] = 1
                poll.modify(fd, select.EPOLLIN)
                continue
            try:
                data = peer.recv(4096)
            except OSError:
                end(fd, 2)
                continue
            if state[1] == 1:
                head = state[2] + data
                if not data or (b"\r\n\r\n" not in head and len(head) > 4096):
                    end(fd, 2)
                elif b"\r\n\r\n" in head:
                    if not head.startswith(b"HTTP/1.1 101"):
                        end(fd, 2)
                        continue
                    counts[0] += 1
                    peer.send(tail)
                    counts[3] += 1
                    state[1], state[2] = 2, b""
                else:
                    state[2] = head
            elif not data:  # the daemon ended it, after its close frame
                end(fd, 1)
        counts[5] = len(peers)


class Churn:
    """
    --webhook's churn process (churnLoad), idle until start(): measure()'s
    BACKGROUND. WARM, if given, is called after a second's churn, before
    the window (the never-answered webhook's queue filling up).
    """

    def __init__(self, port: int, rate: float, warm: Any = None) -> None:
        context = multiprocessing.get_context("fork")
        self.counts = context.Array("q", len(CHURN_FIELDS), lock=False)
        self.active = context.Value("b", 0, lock=False)
        self.warm = warm
        self.process = context.Process(
            target=churnLoad, args=(port, rate, self.counts, self.active), daemon=True
        )
        self.process.start()

    def start(self) -> None:
        self.active.value = 1
        time.sleep(1.0)
        if self.warm is not None:
            self.warm()

    def stop(self) -> None:
        self.active.value = 0
        deadline = time.monotonic() + 5
        while self.counts[5] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the daemon sees the last of them go

    def times(self) -> tuple[float, float]:
        return cpuTimes(self.process.pid)

    def read(self) -> dict[str, int]:
        return dict(zip(CHURN_FIELDS, self.counts, strict=True))

    def close(self) -> None:
        self.process.terminate()
        self.process.join(5)


def webhookFigures(daemon: Daemon) -> dict[str, float]:
    """
    The daemon's webhook counts for APP from its /metrics: events delivered,
    dropped (by reason) and posts (by outcome); and its queue's length.
    """
    figures = {}
    for name, value in daemon.scrape().items():
        if not name.startswith("socktopus_webhook_") or f'app="{APP}"' not in name:
            continue
        match = re.search(r'(?:reason|outcome)="([^"]+)"', name)
        kind = name.split("{")[0].removeprefix("socktopus_webhook_").removesuffix("_total")
        figures[kind + (f"_{match.group(1)}" if match else "")] = value
    return figures


def hookName(phase: str, key: str) -> str:
    return f"{phase}, ({key}) {HOOK_NAMES[key]}"


def hookEntry(name: str, batch: int, raw: dict) -> dict:
    """
    One --webhook window's figures.
    """
    cpu = {k: user + system for k, (user, system) in raw["cpu"].items()}
    wall, delivered, requests = raw["seconds"], raw["delivered"], raw["requests"]
    daemon = cpu["daemon"]
    entry: dict[str, Any] = {"name": name, "seconds": round(wall, 2)}
    if batch:
        entry.update(
            {
                "requests": requests,
                "sent": raw["sent"],
                "failed": raw["failed"],
                "delivered": delivered,
                "delivered_per_s": round(delivered / wall),
                "requests_per_s": round(requests / wall),
                # From the sender's stamp in the content to the client's read.
                "latency_p50_ms": round(percentile(raw["latencies"], 50), 2),
                "latency_p99_ms": round(percentile(raw["latencies"], 99), 2),
            }
        )
    entry["daemon_cpu_s"] = round(daemon, 3)
    entry["daemon_cores"] = round(daemon / wall, 3)
    if batch:
        entry["daemon_cpu_ms_per_1000_messages"] = round(daemon * 1e6 / max(delivered, 1), 3)
        entry["daemon_cpu_ms_per_1000_requests"] = round(daemon * 1e6 / max(requests, 1), 3)
    probes = raw["probes"]
    if "churn" in probes:
        churn = probes["churn"]
        entry["churn_connections"] = churn["opened"]
        entry["churn_per_s"] = round(churn["opened"] / wall)
        entry["churn_closed_by_daemon"] = churn["closed"]
        entry["churn_failed"] = churn["failed"]
        entry["churn_slots_skipped"] = churn["skipped"]
        entry["churn_generator_cores"] = round(cpu["churn"] / wall, 3)
        if not batch:
            # What one churned client costs the daemon: its handshake, its
            # message, its close and their three webhook events.
            entry["daemon_cpu_ms_per_1000_churn_connections"] = round(
                daemon * 1e6 / max(churn["opened"], 1), 2
            )
    if "receiver" in probes:
        hook = probes["receiver"]
        entry["receiver_events_per_s"] = round(hook["events"] / wall)
        entry["receiver_posts_per_s"] = round(hook["posts"] / wall, 2)
        for kind in ("connect", "message", "disconnect"):
            entry[f"receiver_{kind}_events"] = hook[kind]
        entry["receiver_client_reasons"] = hook["client"]
        entry["receiver_connections_accepted"] = hook["accepted"]
        entry["receiver_cores"] = round(cpu["receiver"] / wall, 3)
        entry["receiver_cpu_ms_per_1000_events"] = round(
            cpu["receiver"] * 1e6 / max(hook["events"], 1), 2
        )
    if "webhook" in probes:
        counted = probes["webhook"]
        entry["daemon_events_delivered_per_s"] = round(counted.get("events_delivered", 0) / wall)
        entry["daemon_events_dropped_overflow_per_s"] = round(
            counted.get("events_dropped_overflow", 0) / wall
        )
        for outcome in ("delivered", "timeout", "failed", "server_error", "rejected"):
            entry[f"daemon_posts_{outcome}"] = counted.get(f"posts_{outcome}", 0)
    entry["generator_cpu_s"] = round(raw["generator_cpu"], 2)
    # What the machine did besides the daemon, the generators, the churn and
    # the receiver (softirq, this script, someone else's test run), in cores.
    entry["other_cores"] = round(
        (raw["box_busy"] - sum(cpu.values()) - raw["generator_cpu"]) / wall, 2
    )
    entry["waited_for_quiet_s"] = round(raw["waited_for_quiet"], 1)
    return entry


def hookConfig(key: str, options: argparse.Namespace) -> list[dict]:
    """
    One configuration's windows, on a daemon (and receiver) of its own: the
    churn alone (not for (a)), then the batch and the single phase (with
    the churn for (b) and (c)).
    """
    results = []
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        environment, hook, churn = {}, None, None
        if key != "a":
            hook = HookReceiver(answer=key == "b")
            stack.callback(hook.stop)
            environment[f"{APP.upper()}_SOCKTOPUS_WEBHOOK"] = (
                f"http://127.0.0.1:{hook.port}/socktopus"
            )
        metricsPort = freePort()
        daemon = Daemon(
            workdir, logger=options.logger, environment=environment, metricsPort=metricsPort
        )
        stack.callback(daemon.stop)
        watched: dict[str, Any] = {"daemon": daemon}
        probes: dict[str, Any] = {}
        if hook is not None:

            def full() -> None:
                # (c): measured with the queue at its cap, dropping.
                if key != "c":
                    return
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if webhookFigures(daemon).get("queue", 0) >= 10_000:
                        return
                    time.sleep(0.2)
                print("  the webhook queue did not fill up in 30 s", flush=True)

            watched["receiver"] = hook
            probes.update(receiver=hook.read, webhook=lambda: webhookFigures(daemon))
        # (a) has the churn only in its churn-alone window: what churned
        # clients cost without a webhook (their DATA:x is refused, 1003).
        churn = Churn(daemon.port, options.churn, warm=None if hook is None else full)
        stack.callback(churn.close)
        port = daemon.port
        windows = [(phase, batch, key) for phase, batch in HOOK_PHASES]
        if hook is None:
            windows += [(phase, batch, "a+") for phase, batch in HOOK_PHASES[1:]]
        for phase, batch, nameKey in windows:
            churning = not batch or nameKey != "a"
            name = hookName(phase, nameKey)
            raw = functools.partial(
                measure,
                {**watched, **({"churn": churn} if churning else {})},
                [(port, 0, 500, 1), (port, 500, 500, 1)],
                [(port, 4)] if batch else [],
                batch or 1,
                64,
                options.seconds,
                background=churn if churning else None,
                probes={**probes, **({"churn": churn.read} if churning else {})},
            )
            entry = again(raw, functools.partial(hookEntry, name, batch), options.others)
            entry["daemon_rss_mib"] = round(daemon.rss() / 2**20, 1)
            entry["daemon_peak_rss_mib"] = round(daemon.peakRss() / 2**20, 1)
            if hook is not None:
                entry["webhook_queue_after"] = webhookFigures(daemon).get("queue", 0)
            print(
                f"  {name}: daemon {entry['daemon_cores']:g} cores"
                + (
                    f", {entry['daemon_cpu_ms_per_1000_messages']:g} ms/1000 messages"
                    if batch
                    else ""
                )
                + (f", churn {entry['churn_per_s']}/s" if churning else "")
                + (f", receiver {entry['receiver_events_per_s']} events/s" if hook else "")
                + f", other {entry['other_cores']:g}",
                flush=True,
            )
            results.append(entry)
    return results


def hookRound(options: argparse.Namespace, order: list[str]) -> list[dict]:
    """
    One round: each configuration in ORDER, then (b)'s and (c)'s figures with
    the churn's cost (from the churn-alone window of the same daemon, per
    churned connection) subtracted, and against (a)'s of the same round.
    """
    results = []
    for key in order:
        results.extend(hookConfig(key, options))
    byName = {e["name"]: e for e in results}
    churnedA = byName[hookName("churn alone", "a")]["daemon_cpu_ms_per_1000_churn_connections"]
    for key in ("a+", "b", "c"):
        alone = byName[hookName("churn alone", key.rstrip("+"))]
        perConnection = alone["daemon_cpu_s"] / max(alone["churn_connections"], 1)
        if key != "a+":
            alone["churned_cpu_vs_a"] = round(
                alone["daemon_cpu_ms_per_1000_churn_connections"] / max(churnedA, 0.01), 3
            )
        for phase, batch in HOOK_PHASES[1:]:
            entry, base = byName[hookName(phase, key)], byName[hookName(phase, "a")]
            subtracted = perConnection * entry["churn_connections"]
            net = entry["daemon_cpu_s"] - subtracted
            entry["churn_cpu_subtracted_s"] = round(subtracted, 3)
            entry["net_daemon_cpu_ms_per_1000_messages"] = round(
                net * 1e6 / max(entry["delivered"], 1), 3
            )
            entry["net_daemon_cpu_ms_per_1000_requests"] = round(
                net * 1e6 / max(entry["requests"], 1), 3
            )
            figure = "messages" if batch > 1 else "requests"
            own = entry[f"daemon_cpu_ms_per_1000_{figure}"]
            theirs = max(base[f"daemon_cpu_ms_per_1000_{figure}"], 0.001)
            entry["raw_cpu_vs_a"] = round(own / theirs, 3)
            entry["net_cpu_vs_a"] = round(entry[f"net_daemon_cpu_ms_per_1000_{figure}"] / theirs, 3)
            entry["latency_p99_vs_a"] = round(
                entry["latency_p99_ms"] / max(base["latency_p99_ms"], 0.01), 2
            )
            entry["delivered_per_s_vs_a"] = round(
                entry["delivered_per_s"] / max(base["delivered_per_s"], 1), 3
            )
            if key != "a+":
                # Against the same churn without a webhook: the webhook's part.
                churned = byName[hookName(phase, "a+")]
                entry["raw_cpu_vs_a_plus"] = round(
                    own / max(churned[f"daemon_cpu_ms_per_1000_{figure}"], 0.001), 3
                )
                entry["net_cpu_vs_a_plus"] = round(
                    entry[f"net_daemon_cpu_ms_per_1000_{figure}"]
                    / max(churned[f"net_daemon_cpu_ms_per_1000_{figure}"], 0.001),
                    3,
                )
    order_ = [hookName(p, k) for k in HOOK_NAMES for p, _ in HOOK_PHASES]
    return sorted(results, key=lambda e: order_.index(e["name"]))


def runFacts() -> dict[str, Any]:
    """
    What every report starts with: when, on what machine, by what command.
    """
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
    }


def treeState() -> dict[str, Any]:
    """
    The commit measured, and the files changed since (uncommitted work).
    """

    def git(*arguments: str) -> str:
        # Not strip(): a status line starts with a space.
        return subprocess.run(
            ["git", *arguments], capture_output=True, text=True, cwd=HERE
        ).stdout.rstrip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--untracked-files=no").splitlines(),
        "uncommitted_diff_sha1": hashlib.sha1(git("diff", "HEAD").encode()).hexdigest(),
    }


def webhookMain(options: argparse.Namespace) -> None:
    options.seconds = options.seconds or 10.0
    options.runs = options.runs or 3
    options.json = options.json or os.path.join(HERE, "webhook-results.json")
    tree = treeState()
    rounds, orders = [], []
    keys = [k for k, _ in HOOK_CONFIGS]
    for n in range(options.runs):
        # Alternate the order, so a drift of the machine's speed over the
        # run falls on every configuration alike.
        order = keys if n % 2 == 0 else keys[::-1]
        orders.append(order)
        print(f"round {n + 1} of {options.runs}: {', then '.join(order)}", flush=True)
        rounds.append(hookRound(options, order))
    summary = summarise(rounds)
    report = {
        **runFacts(),
        "logger": options.logger,
        "generators_on_uvloop": importlib.util.find_spec("uvloop") is not None,
        "tree": tree,
        "seconds_per_phase": options.seconds,
        "churn_per_s": options.churn,
        "configurations": {
            "a": "no webhook: the batch and the single phase as bench/run.py runs them",
            "b": f"{APP.upper()}_SOCKTOPUS_WEBHOOK to a receiver of the harness's (one process, "
            "epoll, events counted in the bytes, 204 at once), while a churn process opens "
            f"and closes {options.churn:g} WebSocket clients a second to the same app, each "
            "sending one DATA:x then a close frame (connect, message and disconnect events)",
            "c": "as (b), but the receiver reads the posts and never answers: the daemon's "
            "queue is at its 10,000-event cap (waited for before the first window) and drops",
            "a+": "(a)'s daemon (no webhook) under the same churn, after (a)'s windows; the "
            "churned clients' DATA:x is refused (1003), there being no webhook. (b) and (c) "
            "over (a+) (*_vs_a_plus) is the webhook's part, the churn's interference aside",
        },
        "phases": {
            "churn alone": "the churn with no /send (the 1,000 clients connected, idle): its "
            "cost to the daemon per churned connection, subtracted from the same "
            "configuration's /send windows as churn_cpu_subtracted_s; (a) has this window "
            "too (its clients' DATA:x refused with 1003, there being no webhook), only to "
            "show what the webhook adds per churned connection (churned_cpu_vs_a)",
            "batch 100 x 64 B": "1,000 clients, 4 closed /send loops, 100 x 64 B per request",
            "single x 64 B": "the same with one message per request",
        },
        "figures": {
            "daemon_cpu_ms_per_1000_*": "raw: all the daemon's CPU in the window, the churn's "
            "connections and webhook events included",
            "net_daemon_cpu_ms_per_1000_*": "the daemon's CPU less the churn's (churn alone's "
            "CPU per churned connection times the window's churned connections)",
            "raw_cpu_vs_a, net_cpu_vs_a": "over (a)'s of the same round: per 1,000 messages "
            "for the batch phase, per 1,000 requests for the single one",
            "latency_*_ms": "from the sender's stamp in a message to its client's read",
            "receiver_events_per_s": "events in the posts the receiver read (for (c): never "
            "answered, so the same events come again with each retry)",
        },
        "order_of_rounds": orders,
        f"median_of_{options.runs}": summary,
        "rounds": rounds,
    }
    with open(options.json, "w") as f:
        json.dump(report, f, indent=2)
    printWebhook(summary, rounds)
    print(f"\nwritten to {options.json}")


def printWebhook(summary: dict, rounds: list[list[dict]]) -> None:
    def cell(name: str, key: str) -> str:
        value = summary.get(name, {}).get(key)
        if value is None:
            return "-"
        if value["min"] == value["max"]:
            return f"{value['median']:g}"
        return f"{value['median']:g} ({value['min']:g}-{value['max']:g})"

    print(f"\nmedian of {len(rounds)} (min-max); CPU in ms of the daemon's")
    for phase, batch in HOOK_PHASES[1:]:
        figure = "messages" if batch > 1 else "requests"
        print(f"\n{phase}: CPU per 1,000 {figure}")
        for key, description in HOOK_NAMES.items():
            name = hookName(phase, key)
            print(f"  ({key}) {description}")
            rows = [
                (f"raw CPU / 1,000 {figure}", f"daemon_cpu_ms_per_1000_{figure}"),
                ("  raw vs (a)", "raw_cpu_vs_a"),
                ("  raw vs (a+)", "raw_cpu_vs_a_plus"),
                (f"net CPU / 1,000 {figure}", f"net_daemon_cpu_ms_per_1000_{figure}"),
                ("  net vs (a)", "net_cpu_vs_a"),
                ("  net vs (a+)", "net_cpu_vs_a_plus"),
                ("churn CPU subtracted, s", "churn_cpu_subtracted_s"),
                ("delivered/s", "delivered_per_s"),
                ("p99 ms", "latency_p99_ms"),
                ("  p99 vs (a)", "latency_p99_vs_a"),
                ("churn/s", "churn_per_s"),
                ("receiver events/s", "receiver_events_per_s"),
                ("receiver cores", "receiver_cores"),
                ("daemon delivered events/s", "daemon_events_delivered_per_s"),
                ("daemon dropped (overflow)/s", "daemon_events_dropped_overflow_per_s"),
                ("daemon RSS MiB after", "daemon_rss_mib"),
                ("other cores", "other_cores"),
            ]
            for label, key_ in rows:
                if key_ in summary.get(name, {}):
                    print(f"    {label:30} {cell(name, key_)}")
    print("\nchurn alone (no /send; (a)'s clients have their DATA:x refused)")
    for key, description in HOOK_CONFIGS:
        name = hookName("churn alone", key)
        print(f"  ({key}) {description}")
        for label, key_ in [
            ("daemon cores", "daemon_cores"),
            ("daemon ms / 1,000 churned", "daemon_cpu_ms_per_1000_churn_connections"),
            ("  vs (a)", "churned_cpu_vs_a"),
            ("churn/s", "churn_per_s"),
            ("churn generator cores", "churn_generator_cores"),
            ("receiver events/s", "receiver_events_per_s"),
            ("daemon dropped (overflow)/s", "daemon_events_dropped_overflow_per_s"),
            ("daemon RSS MiB after", "daemon_rss_mib"),
        ]:
            if key_ in summary.get(name, {}):
                print(f"    {label:30} {cell(name, key_)}")
    last = hookName(HOOK_PHASES[-1][0], "c")
    print(
        f"\n(c)'s daemon RSS at its end: {cell(last, 'daemon_rss_mib')} MiB, "
        f"peak {cell(last, 'daemon_peak_rss_mib')} MiB; queue {cell(last, 'webhook_queue_after')}"
    )
    print(
        "\nagainst the goal: /send CPU within 5% of (a)'s (net: the churn's CPU subtracted; "
        "vs (a+): against the same churn without a webhook)"
    )
    for phase, _ in HOOK_PHASES[1:]:
        for key in ("b", "c"):
            for figure in ("net_cpu_vs_a", "raw_cpu_vs_a", "net_cpu_vs_a_plus"):
                value = summary[hookName(phase, key)][figure]
                print(
                    f"  {phase:17} ({key}) {figure:13} {value['median']:>6g} "
                    f"({value['min']:g}-{value['max']:g})  <= 1.05: "
                    f"{'met' if value['median'] <= 1.05 else 'not met'}"
                )


#: --baseline's servers of ours and their commands: as the README starts
#: it, and once more with the text logger (for the single phase). The Go
#: original ("go") is the binary given.
OURS = {
    "ours": [TWISTD, "-n", "socktopus"],
    "ours, text logger": [TWISTD, "-n", "--logger", "socktopus_tw.logs.text", "socktopus"],
}

#: --baseline's table: (figure, phase, key, our server in the ratio). The
#: labels' numbers are the options'.
BASELINE_FIGURES = [
    (
        "CPU ms / 1,000 messages, batch 100 x 64 B",
        RELAY_PHASES["batch"][0],
        "daemon_cpu_ms_per_1000_messages",
        "ours",
    ),
    (
        "CPU ms / 1,000 single /send",
        RELAY_PHASES["single"][0],
        "daemon_cpu_ms_per_1000_requests",
        "ours",
    ),
    (
        "  the same, ours with the text logger",
        RELAY_PHASES["single"][0],
        "daemon_cpu_ms_per_1000_requests",
        "ours, text logger",
    ),
    ("CPU ms / connect ({connects:,})", CONNECT, "daemon_cpu_ms_per_connect", "ours"),
    ("CPU ms / connect ({burst:,} at once)", BURST, "daemon_cpu_ms_per_connect", "ours"),
    ("connects/s held ({connects:,})", CONNECT, "connects_per_s", "ours"),
    ("connects/s held ({burst:,} at once)", BURST, "connects_per_s", "ours"),
    ("handshake p50 ms ({connects:,})", CONNECT, "handshake_p50_ms", "ours"),
    ("handshake p99 ms ({connects:,})", CONNECT, "handshake_p99_ms", "ours"),
    ("handshake p99 ms ({burst:,} at once)", BURST, "handshake_p99_ms", "ours"),
    ("client wait p99 ms ({burst:,} at once)", BURST, "client_wait_p99_ms", "ours"),
    ("tokens expired ({burst:,} at once)", BURST, "expired", "ours"),
    ("connects failed ({burst:,} at once)", BURST, "failed", "ours"),
    ("RSS KiB / idle connection ({idle:,})", "idle memory", "rss_per_connection_kib", "ours"),
    ("batch p99 latency ms", RELAY_PHASES["batch"][0], "latency_p99_ms", "ours"),
    ("single p99 latency ms", RELAY_PHASES["single"][0], "latency_p99_ms", "ours"),
]

#: What --baseline found of the Go original's wire, read in its source.
BASELINE_WIRE = {
    "tokens": "the same format (hex(T) h hex(APP) h hex(ID) h hex(HMAC-SHA256(SECRET, T + ID)), "
    "T in decimal ms), so one generator mints for both; the Go original accepts a token stamped "
    "in the future, which no generator here makes",
    "path": "the Go original serves /recieve only (no /receive alias): the generators use /recieve",
    "/send": "the same body and answer; it chunks answers over 4 KiB (a batch of 100), which the "
    "senders read as well as Content-Length",
    "keepalive": "it closes a client 20 s after its last PING text frame (WebSocket pings do not "
    "count) and pings no one: every receiver sends PING before each window, and every 10 s "
    "while waiting for a quiet machine; both servers get the same PINGs",
    "concurrency": "its /send writes to a client from the request's goroutine, racing any PONG "
    "its reader writes (gorilla panics on that), so no PING is sent during a window",
}


def baselineRound(options: argparse.Namespace, oursFirst: bool) -> dict[str, list[dict]]:
    """
    One round of --baseline: each group of phases on a fresh server of ours
    and then on one of Go's (or Go's first), as a user starts each; ours
    with the text logger runs the single phase after the first pair.
    """
    runs = []
    for group in phaseGroups(["batch", "single", "connect", "idle"], options):
        pair = [("ours", group), ("go", group)]
        runs.extend(pair if oursFirst else pair[::-1])
    runs.insert(2, ("ours, text logger", phaseGroups(["single"], options)[0]))
    results: dict[str, list[dict]] = {key: [] for key in ("go", *OURS)}
    for key, group in runs:
        server = AsUsersStart(*OURS.get(key, [options.baseline]))
        try:
            for phase in group:
                entry = again(functools.partial(phase, server), others=options.others)
                results[key].append(entry)
                print(f"  {key}: {entry['name']}: {baselineLine(entry)}", flush=True)
        finally:
            server.stop()
    return results


def baselineLine(entry: dict) -> str:
    """
    An entry's headline figures, for the progress lines.
    """
    keys = [key for _, phase, key, _ in BASELINE_FIGURES if phase == entry["name"]]
    return ", ".join(f"{key} {entry[key]}" for key in dict.fromkeys(keys)) + (
        f", other cores {entry['other_cores']}" if "other_cores" in entry else ""
    )


def baselineFigures(rounds: list[dict[str, list[dict]]], options: argparse.Namespace) -> list:
    """
    Each figure of BASELINE_FIGURES: Go's and ours per round and their
    medians, and ours / Go: the median of the rounds' ratios, and its range.
    """
    figures = []
    for label, phase, key, ours in BASELINE_FIGURES:
        theirs, mine = (
            [next(e[key] for e in r[server] if e["name"] == phase) for r in rounds]
            for server in ("go", ours)
        )
        ratios = [round(m / g, 3) for m, g in zip(mine, theirs, strict=True) if g]
        figures.append(
            {
                "figure": label.format(**vars(options)),
                "phase": phase,
                "key": key,
                "ours": ours,
                "go_median": statistics.median(theirs),
                "ours_median": statistics.median(mine),
                "ratio_median": statistics.median(ratios) if ratios else None,
                "ratio_min": min(ratios, default=None),
                "ratio_max": max(ratios, default=None),
                "go_per_round": theirs,
                "ours_per_round": mine,
            }
        )
    return figures


def baselineMain(options: argparse.Namespace) -> None:
    options.seconds = options.seconds or 10.0
    options.runs = options.runs or 3
    options.json = options.json or os.path.join(HERE, "baseline-results.json")
    binary = os.path.abspath(options.baseline)
    options.baseline = binary
    tree, began = treeState(), time.monotonic()
    rounds, orders = [], []
    for n in range(options.runs):
        # Alternate which goes first, so a drift of the machine's speed
        # over the run falls on both alike.
        order = ["ours", "go"] if n % 2 == 0 else ["go", "ours"]
        orders.append(order)
        print(f"round {n + 1} of {options.runs}: {', then '.join(order)}", flush=True)
        rounds.append(baselineRound(options, oursFirst=n % 2 == 0))
    figures = baselineFigures(rounds, options)
    with open(binary, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    report = {
        **runFacts(),
        # Others may commit meanwhile: what each server ran is between the two.
        "tree": tree,
        "tree_at_end": treeState(),
        "seconds_taken": round(time.monotonic() - began),
        "go_binary": {"path": binary, "sha256": digest},
        "started_as": {
            key: f"PORT=<free port> {APP.upper()}_SOCKTOPUS_SECRET=<secret> "
            + " ".join(os.path.relpath(word) if word == TWISTD else word for word in command)
            + ", in an empty working directory of its own"
            for key, command in {"go": [binary], **OURS}.items()
        },
        "wire": BASELINE_WIRE,
        "seconds_per_relay_phase": options.seconds,
        "connect_phase": f"{options.connects:,} connects, {options.in_flight} at a time (closed "
        f"loops), then {options.burst:,} clients at once, each on a fresh server, from "
        f"{CONNECTORS} generator processes; a token stamped as each try starts; a refused "
        f"client tries again with a fresh token, {CONNECT_TRIES} tries at most",
        "order_of_rounds": orders,
        "figures": figures,
        "rounds": rounds,
    }
    with open(options.json, "w") as f:
        json.dump(report, f, indent=2)
    printBaseline(figures, len(rounds))
    print(f"\n{report['seconds_taken']} s; written to {options.json}")


def printBaseline(figures: list[dict], rounds: int) -> None:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    print(f"\nmedians of {rounds} rounds; ours / Go: the median of the rounds' ratios (range)")
    print(f"  {'figure':44} {'Go':>10} {'ours':>10}  ours / Go")
    for figure in figures:
        ratio = (
            f"{cell(figure['ratio_median'])} ({cell(figure['ratio_min'])}-"
            f"{cell(figure['ratio_max'])})"
            if figure["ratio_median"] is not None
            else "-"
        )
        print(
            f"  {figure['figure']:44} {cell(figure['go_median']):>10} "
            f"{cell(figure['ours_median']):>10}  {ratio}"
        )


if __name__ == "__main__":
    main()
