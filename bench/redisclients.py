"""
Which Redis client for the cluster: txredisapi on Twisted's default reactor,
or redis-py's asyncio client on Twisted's asyncio reactor.

Measures this process's CPU per command (time.process_time) for what the
cluster registry does: commands awaited one at a time, commands pipelined
(many in flight, as a busy node has them), and pub/sub messages received.
Starts its own redis-server on a free port.

    .venv/bin/python bench/redisclients.py            # both, 3 rounds each
    .venv/bin/python bench/redisclients.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SEQUENTIAL = 5_000
PIPELINED = 50_000
RECEIVED = 50_000
PAYLOAD = b"x" * 200


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startRedis() -> tuple[subprocess.Popen, int]:
    port = freePort()
    directory = tempfile.mkdtemp()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return process, port
        except OSError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def publishRaw(port: int, channel: bytes, count: int) -> None:
    """
    Publish COUNT messages from a plain socket (not the measured process).
    """
    command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel),
        channel,
        len(PAYLOAD),
        PAYLOAD,
    )
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(command * count)
        expected, got = count, 0
        while got < expected:
            got += s.recv(1 << 20).count(b"\r\n")


def runTxredisapi(port: int) -> dict[str, float]:
    import txredisapi
    from twisted.internet import defer, reactor, task

    results: dict[str, float] = {}

    @defer.inlineCallbacks
    def main():
        redis = yield txredisapi.Connection("127.0.0.1", port, reconnect=False)
        start = time.process_time()
        for _ in range(SEQUENTIAL):
            yield redis.publish("bench", PAYLOAD)
        results["sequential_us"] = (time.process_time() - start) / SEQUENTIAL * 1e6

        start = time.process_time()
        yield defer.gatherResults([redis.publish("bench", PAYLOAD) for _ in range(PIPELINED)])
        results["pipelined_us"] = (time.process_time() - start) / PIPELINED * 1e6

        received = defer.Deferred()
        counter = [0]

        class Subscriber(txredisapi.SubscriberProtocol):
            def messageReceived(self, pattern, channel, message):
                counter[0] += 1
                if counter[0] == RECEIVED:
                    received.callback(None)

        factory = txredisapi.SubscriberFactory()
        factory.protocol = Subscriber
        from twisted.internet.endpoints import TCP4ClientEndpoint

        sub = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        yield sub.subscribe("recv")
        yield task.deferLater(reactor, 0.2, lambda: None)
        start = time.process_time()
        reactor.callInThread(publishRaw, port, b"recv", RECEIVED)
        yield received
        results["received_us"] = (time.process_time() - start) / RECEIVED * 1e6
        yield redis.disconnect()
        sub.transport.loseConnection()

    def done(result):
        reactor.stop()
        return result

    reactor.callWhenRunning(lambda: main().addBoth(done))
    reactor.run()
    return results


def runRedisPy(port: int) -> dict[str, float]:
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    import redis.asyncio as aioredis
    from twisted.internet import defer, reactor

    results: dict[str, float] = {}

    async def main():
        redis = aioredis.Redis(host="127.0.0.1", port=port)
        start = time.process_time()
        for _ in range(SEQUENTIAL):
            await redis.publish("bench", PAYLOAD)
        results["sequential_us"] = (time.process_time() - start) / SEQUENTIAL * 1e6

        # A busy node has many commands in flight from many requests; redis-py
        # multiplexes over a pool, so the fair comparison is concurrent calls.
        redis2 = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool(
                host="127.0.0.1", port=port, max_connections=50
            )
        )
        start = time.process_time()
        await asyncio.gather(*[redis2.publish("bench", PAYLOAD) for _ in range(PIPELINED)])
        results["pool_us"] = (time.process_time() - start) / PIPELINED * 1e6

        start = time.process_time()
        pipe = redis.pipeline(transaction=False)
        for _ in range(PIPELINED):
            pipe.publish("bench", PAYLOAD)
        await pipe.execute()
        results["pipelined_us"] = (time.process_time() - start) / PIPELINED * 1e6

        pubsub = redis.pubsub()
        await pubsub.subscribe("recv")
        await pubsub.get_message(timeout=1.0)
        start = time.process_time()
        publisher = loop.run_in_executor(None, publishRaw, port, b"recv", RECEIVED)
        count = 0
        async for message in pubsub.listen():
            if message["type"] == "message":
                count += 1
                if count == RECEIVED:
                    break
        results["received_us"] = (time.process_time() - start) / RECEIVED * 1e6
        await publisher
        await pubsub.aclose()
        await redis.aclose()
        await redis2.aclose()

    def done(result):
        reactor.stop()
        return result

    reactor.callWhenRunning(
        lambda: defer.Deferred.fromFuture(asyncio.ensure_future(main())).addBoth(done)
    )
    reactor.run()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=["txredisapi", "redis-py"])
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.client:
        run = runTxredisapi if args.client == "txredisapi" else runRedisPy
        print(json.dumps(run(args.port)))
        return
    redis, port = startRedis()
    try:
        rounds: dict[str, list[dict[str, float]]] = {"txredisapi": [], "redis-py": []}
        for _ in range(args.rounds):
            for client in rounds:
                out = subprocess.run(
                    [sys.executable, __file__, "--client", client, "--port", str(port)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                rounds[client].append(json.loads(out.splitlines()[-1]))
        print(f"client CPU per command, median of {args.rounds} rounds (us)")
        print(f"{'':12} {'awaited':>9} {'pipelined':>10} {'received':>9}")
        for client, results in rounds.items():
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            print(
                f"{client:12} {med['sequential_us']:9.1f} {med['pipelined_us']:10.1f}"
                f" {med['received_us']:9.1f}"
            )
    finally:
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
