"""
The Socktopus benchmark: the daemon as users run it (twistd, a subprocess),
driven over loopback by separate load-generator processes.

    .venv/bin/python bench/run.py [--json bench/last-run.json] [--seconds 10] [--only PHASES]
                                  [--logger socktopus_tw.logs.text | twistd] [--runs 3]

Prints a table and writes JSON. Daemon CPU comes from /proc/<pid>/stat
(user + system), so it is the daemon's own cost whatever the generator does.
The daemon logs as the shipped systemd unit has it log (--logger
socktopus_tw.logs.text); "--logger twistd" measures twistd's default observer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
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


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


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
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / TICK, int(fields[12]) / TICK

    def cpu(self) -> float:
        return sum(self.times())

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.drain.wait(5)


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
    started = [start("receive", port, n * share, share) for n in range(processes)]
    for process in started:
        line = process.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"receiver failed: {line}")
    return started


def relay(daemon: Daemon, name: str, batch: int, size: int, seconds: float) -> dict:
    """
    1,000 connections, 4 senders in one process, BATCH messages of SIZE bytes.
    """
    listening = receivers(daemon.port, 1000, 2)
    time.sleep(0.5)  # let connection set-up settle out of the measured window
    (user0, system0), wall0 = daemon.times(), time.monotonic()
    sender = start("send", daemon.port, 4, 1000, batch, size, seconds)
    sent = result(sender)
    time.sleep(0.5)  # in-flight frames reach the clients
    (user1, system1), wall1 = daemon.times(), time.monotonic()
    cpu0, cpu1 = user0 + system0, user1 + system1
    for process in listening:
        process.terminate()
    received = [result(p) for p in listening]
    delivered = sum(r["received"] for r in received)
    latencies = [ns / 1e6 for r in received for ns in r["latencies"]]
    generatorCpu = sent["cpu"] + sum(r["cpu"] for r in received)
    return {
        "name": name,
        "batch": batch,
        "size": size,
        "seconds": round(wall1 - wall0, 2),
        "requests": sent["requests"],
        "sent": sent["sent"],
        "delivered": delivered,
        "delivered_per_s": round(delivered / (wall1 - wall0)),
        "requests_per_s": round(sent["requests"] / (wall1 - wall0)),
        "latency_p50_ms": round(percentile(latencies, 50), 2),
        "latency_p99_ms": round(percentile(latencies, 99), 2),
        "daemon_cpu_s": round(cpu1 - cpu0, 2),
        "daemon_system_cpu_share": round((system1 - system0) / max(cpu1 - cpu0, 0.01), 2),
        "daemon_cpu_ms_per_1000_messages": round((cpu1 - cpu0) * 1e6 / max(delivered, 1), 2),
        "daemon_cpu_ms_per_1000_requests": round((cpu1 - cpu0) * 1e6 / max(sent["requests"], 1), 2),
        "generator_cpu_s": round(generatorCpu, 2),
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
    parser.add_argument("--seconds", type=float, default=10.0, help="per relay phase")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections to hold")
    parser.add_argument("--json", default=os.path.join(HERE, "last-run.json"))
    parser.add_argument("--only", help="comma-separated phases: batch,single,1k,idle,accounts")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repeat; the JSON then has each figure's median, min and max",
    )
    parser.add_argument(
        "--logger",
        default="socktopus_tw.logs.text",
        help="twistd's --logger for the daemon ('twistd': its default)",
    )
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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


if __name__ == "__main__":
    main()
