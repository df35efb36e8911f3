# -*- test-case-name: tests.cluster.test_redis -*-
"""
The daemon's two connections to Redis: one for commands (every cluster step
is one script, L{socktopus_tw.cluster.scripts}) and one subscribed to this
node's channel and the cluster's. Both reconnect by themselves, at most a
second apart, and a command never waits longer than L{DEADLINE}.

The protocol is txredisapi's (with hiredis parsing replies); the connections
are L{ClientService}s on the endpoint of the C{--redis} URL.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

import hiredis
import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from socktopus_tw.cluster.redisurl import RedisAddress
from socktopus_tw.cluster.scripts import PREFIX, Script
from socktopus_tw.errors import StartupError

#: Seconds a command may take before it fails (and its connection is
#: dropped, so a frozen Redis is noticed): SPEC §6's "never hangs longer
#: than 2 s".
DEADLINE = 2.0

#: The oldest Redis with everything the scripts use (AUTH with a user name,
#: ZADD GT).
MINIMUM_VERSION = (6, 2)


#: Seconds a timer may fire late before the reactor counts as having been
#: busy rather than Redis as slow.
LATE = 0.05


def _deadline() -> float:
    return DEADLINE


class RedisUnavailable(Exception):
    """
    Redis cannot be reached now: the step fails at once.
    """


def probe(
    address: RedisAddress, timeout: float = DEADLINE, deniedSince: float | None = None
) -> tuple[str, list[bytes]]:
    """
    Before the reactor runs: connect, authenticate, select the database and
    return Redis' version and the cluster's kicks stamped since
    C{deniedSince} (ms; member, time pairs), or raise L{StartupError} saying what is wrong (and
    never the password). Blocking, as the database migration before it is.
    """

    def command(sock: socket.socket, *words: str) -> Any:
        encoded = [w.encode() for w in words]
        sock.sendall(
            b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)
        )
        reader = hiredis.Reader()
        reply = False
        while reply is False:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            reader.feed(chunk)
            reply = reader.gets()
        if isinstance(reply, hiredis.ReplyError):
            raise _Refused(str(reply))
        return reply

    try:
        if address.scheme == "redis+unix":
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(address.path)
        else:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
            if address.scheme == "rediss":
                sock = _tlsContext().wrap_socket(sock, server_hostname=address.host)
        with sock:
            if address.password is not None:
                if address.username:
                    command(sock, "AUTH", address.username, address.password)
                else:
                    command(sock, "AUTH", address.password)
            if address.db:
                command(sock, "SELECT", str(address.db))
            info = command(sock, "INFO", "server").decode(errors="replace")
            denied = []
            if deniedSince is not None:
                denied = command(
                    sock,
                    "ZRANGEBYSCORE",
                    PREFIX + "denied",
                    repr(deniedSince),
                    "+inf",
                    "WITHSCORES",
                )
    except _Refused as e:
        raise StartupError(f"--redis {address}: Redis refused: {e}") from None
    except (OSError, ConnectionError) as e:
        reason = e.strerror or str(e) if isinstance(e, OSError) else str(e)
        raise StartupError(
            f"--redis {address}: cannot reach Redis: {reason or type(e).__name__}"
        ) from None
    version = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("redis_version:")
        ),
        "0",
    )
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MINIMUM_VERSION:
        raise StartupError(
            f"--redis {address}: Redis {version} is too old; the cluster needs Redis 6.2 or newer"
        )
    return version, denied


class _Refused(Exception):
    pass


def _tlsContext() -> ssl.SSLContext:
    """
    Trust what the daemon's connections will (L{RedisAddress.endpoint}), so
    the probe passes only when they can link. Their OpenSSL (cryptography's
    wheel) has no system paths built in: with C{SSL_CERT_FILE} or
    C{SSL_CERT_DIR} set they trust those alone (pyOpenSSL looks for the
    system's only when neither is), where this module's OpenSSL would add
    its own built-in ones.
    """
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        context = ssl.create_default_context(cafile=cafile, capath=capath)
    else:
        context = ssl.create_default_context()
    # service_identity, which checks the host for them, reads only the
    # subjectAltName.
    context.hostname_checks_common_name = False
    return context


class _Commands(txredisapi.RedisProtocol):
    link: RedisLink

    def connectionMade(self) -> Deferred[None]:
        d = super().connectionMade()
        d.addCallback(lambda _: self._ready and self.link._commandsConnected(self))
        return d

    def connectionLost(self, reason: Any) -> None:
        self.link._commandsLost(self)
        super().connectionLost(reason)


class _Subscriber(txredisapi.SubscriberProtocol):
    link: RedisLink

    def connectionMade(self) -> Deferred[None]:
        d = super().connectionMade()
        d.addCallback(lambda _: self._ready and self.link._subscriberReady(self))
        return d

    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.link.onMessage(message)

    def connectionLost(self, reason: Any) -> None:
        self.link._subscriberLost(self)
        super().connectionLost(reason)


class _Factory(Factory):
    """
    What txredisapi's protocol asks of its factory when AUTH or SELECT fail.
    """

    isLazy = True
    noisy = False
    log = Logger()

    def __init__(self, link: RedisLink, protocol: type) -> None:
        self.link = link
        self.protocolClass = protocol

    def buildProtocol(self, addr: Any) -> Any:
        address = self.link.address
        p = self.protocolClass(
            charset=None,
            # The deadline is RedisLink's own (see RedisLink._deadline).
            replyTimeout=None,
            password=address.password,
            dbid=address.db or None,
            convertNumbers=False,
            username=address.username,
        )
        p.factory = self
        p.link = self.link
        return p

    def stopTrying(self) -> None:
        pass

    def connectionError(self, message: str) -> None:
        # txredisapi's text names neither the password nor the URL.
        self.log.warn("Redis {address}: {message}", address=str(self.link.address), message=message)


class RedisLink(MultiService):
    """
    The command and subscriber connections. C{onMessage(bytes)} gets every
    message on C{channels}; C{onReady()} is called each time both
    connections are up again (the cluster then restores its entries).
    """

    log = Logger()

    def __init__(
        self,
        address: RedisAddress,
        reactor: Any,
        channels: list[str],
        onMessage: Callable[[bytes], None],
        onReady: Callable[[], None],
    ) -> None:
        super().__init__()
        self.address = address
        self.reactor = reactor
        self.channels = channels
        self.onMessage = onMessage
        self.onReady = onReady
        self.commands: _Commands | None = None
        self.subscriber: _Subscriber | None = None
        self._subscribed = False
        self._loaded: set[str] = set()
        endpoint = address.endpoint(reactor)
        policy = backoffPolicy(initialDelay=0.1, maxDelay=1.0, factor=2.0)
        for protocol in (_Commands, _Subscriber):
            ClientService(
                endpoint, _Factory(self, protocol), retryPolicy=policy, clock=reactor
            ).setServiceParent(self)

    @property
    def up(self) -> bool:
        """
        Whether both connections are usable.
        """
        return self.commands is not None and self._subscribed

    def run(self, script: Script, *args: str | bytes) -> Deferred[Any]:
        """
        Run one script; fails at once with L{RedisUnavailable} while Redis
        is unreachable, and within L{DEADLINE} seconds if it does not answer.
        """
        if script.sha in self._loaded:
            d = self._command("EVALSHA", script.sha, 0, *args)
        else:
            d = self._command("EVAL", script.source, 0, *args)
            d.addCallback(self._remember, script)
        d.addErrback(self._noScript, script, args)
        return d

    def ping(self) -> Deferred[Any]:
        """
        A round trip: fires once every command sent before it was answered.
        """
        return self._command("PING")

    def pingSubscriber(self) -> Deferred[Any]:
        """
        A round trip on the subscribed connection, so one that died silently
        (nothing else is ever sent on it) is dropped by the deadline and
        made again.
        """
        subscriber = self.subscriber
        if subscriber is None or not self._subscribed:
            return fail(RedisUnavailable("Redis is unreachable"))
        d = subscriber.execute_command("PING")
        self._deadline(d, subscriber)
        return d.addErrback(self._unavailable)

    def publish(self, channel: str, message: bytes) -> Deferred[int]:
        return self._command("PUBLISH", channel, message)

    def _command(self, *words: Any) -> Deferred[Any]:
        commands = self.commands
        if commands is None:
            return fail(RedisUnavailable("Redis is unreachable"))
        d = commands.execute_command(*words)
        self._deadline(d, commands)
        return d.addErrback(self._unavailable)

    def _deadline(self, d: Deferred[Any], commands: txredisapi.RedisProtocol) -> None:
        """
        Drop the connection (failing every command on it, so a frozen Redis
        is noticed) when C{d} has no answer after L{DEADLINE} seconds of the
        reactor's time. When the reactor itself was busy (thousands of
        clients closing at once), the command may not even have been
        written yet: the time it was late is given again, so a busy node
        does not take Redis for frozen, as a plain timer would.
        """
        clock = self.reactor
        timer: list[Any] = []

        def check(due: float) -> None:
            if d.called:
                return
            now = clock.seconds()
            late = now - due
            if late > LATE:
                timer[0] = clock.callLater(late, check, now + late)
            elif commands.transport is not None:
                commands.transport.abortConnection()

        deadline = _deadline()
        timer.append(clock.callLater(deadline, check, clock.seconds() + deadline))

        def cancel(result: Any) -> Any:
            if timer[0].active():
                timer[0].cancel()
            return result

        d.addBoth(cancel)

    @staticmethod
    def _unavailable(failure: Any) -> Any:
        if failure.check(txredisapi.ConnectionError, txredisapi.TimeoutError):
            raise RedisUnavailable(str(failure.value))
        return failure

    def _remember(self, result: Any, script: Script) -> Any:
        self._loaded.add(script.sha)
        return result

    def _noScript(self, failure: Any, script: Script, args: tuple) -> Any:
        if failure.check(txredisapi.ResponseError) and "NOSCRIPT" in str(failure.value):
            # Redis restarted (or its scripts were flushed): send the source.
            self._loaded.discard(script.sha)
            return self.run(script, *args)
        return failure

    def _commandsConnected(self, protocol: _Commands) -> None:
        # A frozen Redis' kernel still accepts connections: usable only once
        # Redis itself answered, within the deadline (else dropped, and made
        # again).
        d = protocol.execute_command("PING")
        self._deadline(d, protocol)
        d.addCallbacks(lambda _: self._commandsReady(protocol), lambda _: None)

    def _commandsReady(self, protocol: _Commands) -> None:
        if protocol.transport is None or not protocol.connected:
            return
        self.commands = protocol
        self._loaded.clear()
        self._readyIfUp()

    def _commandsLost(self, protocol: _Commands) -> None:
        if self.commands is protocol:
            self.commands = None

    def _subscriberReady(self, protocol: _Subscriber) -> None:
        self.subscriber = protocol
        d = Deferred.fromCoroutine(self._subscribe(protocol))
        d.addErrback(lambda f: protocol.transport.abortConnection())

    async def _subscribe(self, protocol: _Subscriber) -> None:
        # One channel a command: SUBSCRIBE answers once per channel, and
        # txredisapi pairs only the first answer with the command, so a later
        # PING on this connection would be paired with a stale answer.
        for channel in self.channels:
            d = protocol.subscribe([channel])
            self._deadline(d, protocol)
            await d
        if self.subscriber is protocol:
            self._subscribed = True
            self._readyIfUp()

    def _subscriberLost(self, protocol: _Subscriber) -> None:
        if self.subscriber is protocol:
            self.subscriber = None
            self._subscribed = False

    def _readyIfUp(self) -> None:
        if self.up:
            self.onReady()
