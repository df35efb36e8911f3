"""
The Socktopus benchmark: the daemon as users run it (twistd, a subprocess),
driven over loopback by separate load-generator processes.

    .venv/bin/python bench/run.py [--json bench/last-run.json] [--seconds 10] [--only PHASES]
                                  [--logger socktopus_tw.logs.text | twistd] [--runs 3]
    .venv/bin/python bench/run.py --cluster [--rounds 3] [--seconds 6] [--rate 10000]
                                  [--redis-socket] [--json bench/cluster-results.json]

Prints a table and writes JSON. Daemon CPU comes from /proc/<pid>/stat
(user + system), so it is the daemon's own cost whatever the generator does.
The daemon logs as the shipped systemd unit has it log (--logger
socktopus_tw.logs.text); "--logger twistd" measures twistd's default observer.

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
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

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


class Daemon:
    def __init__(self, workdir: str, *arguments: str, logger: str = "twistd") -> None:
        env = dict(os.environ, **{f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET})
        logger = [] if logger == "twistd" else ["--logger", logger]
        self.process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                *logger,
                "socktopus",
                "--listen",
                "tcp:0:interface=127.0.0.1:backlog=4096",
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
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise SystemExit("the daemon did not start")
        # Keep draining its log so it never blocks on a full pipe.
        self.log = tempfile.TemporaryFile()
        self.drain = subprocess.Popen(["cat"], stdin=self.process.stdout, stdout=self.log)

    def times(self) -> tuple[float, float]:
        """
        The daemon's user and system CPU seconds so far.
        """
        return cpuTimes(self.process.pid)

    def cpu(self) -> float:
        return sum(self.times())

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.drain.wait(5)


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
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
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
        line = process.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"receiver failed: {line}")
    return started


def measure(
    watched: dict[str, Daemon | Redis],
    listeners: list[tuple[int, int, int, int]],
    senders: list[tuple[int, int]],
    batch: int,
    size: int,
    seconds: float,
    rate: float = 0,
) -> dict:
    """
    Receivers as LISTENERS say, then one sender process per (port, loops)
    in SENDERS, to 1,000 recipients, for SECONDS (at RATE messages per
    second between them, unless 0): each WATCHED process's (user, system)
    CPU seconds over the window, what was sent and what was received.
    """
    listening = listen(listeners)
    time.sleep(0.5)  # let connection set-up settle out of the measured window
    before, wall0 = {k: p.times() for k, p in watched.items()}, time.monotonic()
    loops = sum(n for _, n in senders)
    sending = [
        start("send", port, n, 1000, batch, size, seconds, *([rate * n / loops] if rate else []))
        for port, n in senders
    ]
    reports = [result(p) for p in sending]
    time.sleep(0.5)  # in-flight frames reach the clients
    after, wall1 = {k: p.times() for k, p in watched.items()}, time.monotonic()
    for process in listening:
        process.terminate()
    received = [result(p) for p in listening]
    sent = {key: sum(r[key] for r in reports) for key in ("requests", "sent", "failed", "late")}
    return {
        "seconds": wall1 - wall0,
        # From the first request to the last answer (the longest sender).
        "sending": max(r["seconds"] for r in reports),
        "cpu": {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in watched},
        **sent,
        "delivered": sum(r["received"] for r in received),
        "latencies": [ns / 1e6 for r in received for ns in r["latencies"]],
        "generator_cpu": sum(r["cpu"] for r in reports + received),
    }


def relay(daemon: Daemon, name: str, batch: int, size: int, seconds: float) -> dict:
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
    }


def idleMemory(daemon: Daemon, connections: int) -> dict:
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


def accounts(daemon: Daemon, seconds: float, rounds: int) -> dict:
    """
    Logins at the daemon's bcrypt cost against the bound cores / one hash,
    with a WebSocket client timing PING -> PONG meanwhile.
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
    pinger = start("ping", daemon.port, seconds)
    logins = start("login", daemon.port, seconds)
    done = result(logins)
    pings = result(pinger)
    delays = [ns / 1e6 for ns in pings["delays"]]
    rate = done["logins"] / done["seconds"]
    bound = cores / oneHash
    return {
        "name": "accounts",
        "bcrypt_rounds": rounds,
        "logins": done["logins"],
        "logins_per_s": round(rate, 2),
        "bound_per_s": round(bound, 2),
        "fraction_of_bound": round(rate / bound, 3),
        "one_hash_ms": round(oneHash * 1000, 1),
        "ping_p50_ms": round(percentile(delays, 50), 2),
        "ping_p99_ms": round(percentile(delays, 99), 2),
        "generator_cpu_s": done["cpu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, help="per relay phase (default 10; 6 with --cluster)"
    )
    parser.add_argument("--idle", type=int, default=10000, help="idle connections to hold")
    parser.add_argument(
        "--json", help="default bench/last-run.json; bench/cluster-results.json with --cluster"
    )
    parser.add_argument("--only", help="comma-separated phases: batch,single,1k,idle,accounts")
    parser.add_argument(
        "--runs",
        "--rounds",
        type=int,
        help="repeat (default 1; 3 with --cluster); the JSON then has each figure's median, "
        "min and max",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the two-node phases over a redis-server of our own instead (SPEC §6)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10000,
        help="--cluster: messages/s of the fixed-rate phases (0: none)",
    )
    parser.add_argument(
        "--redis-socket",
        action="store_true",
        help="--cluster: Redis on a unix socket rather than a loopback port",
    )
    parser.add_argument(
        "--logger",
        default="socktopus_tw.logs.text",
        help="twistd's --logger for the daemon ('twistd': its default)",
    )
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if options.cluster:
        clusterMain(options)
        return
    options.seconds = options.seconds or 10.0
    options.runs = options.runs or 1
    options.json = options.json or os.path.join(HERE, "last-run.json")
    phases = (options.only or "batch,single,1k,idle,accounts").split(",")

    runs = [runPhases(phases, options) for _ in range(options.runs)]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "logger": options.logger,
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


def runPhases(phases: list[str], options: argparse.Namespace) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        daemon = Daemon(workdir, logger=options.logger)
        try:
            if "batch" in phases:
                results.append(relay(daemon, "relay, batch 100 x 64 B", 100, 64, options.seconds))
            if "single" in phases:
                results.append(relay(daemon, "relay, single x 64 B", 1, 64, options.seconds))
            if "1k" in phases:
                results.append(
                    relay(daemon, "relay, batch 100 x 1 KiB", 100, 1024, options.seconds)
                )
        finally:
            daemon.stop()
        if "idle" in phases:
            daemon = Daemon(workdir, logger=options.logger)
            try:
                results.append(idleMemory(daemon, options.idle))
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
            raw = measure(
                watched,
                [(nodes[node].port, *rest) for node, *rest in listeners],
                [(nodes[node].port, loops) for node, loops in senders],
                100,
                64,
                options.seconds,
                rate,
            )
            results.append(clusterEntry(phaseName(placement, rate), raw, rate))

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
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
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


if __name__ == "__main__":
    main()
