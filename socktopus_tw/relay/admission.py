# -*- test-case-name: tests.relay.test_admission -*-
"""
Whether a token may open a connection (SPEC §3.2): pure, with the clock and
the token lifespan passed in, and the kick deny-list asked of the registry.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from socktopus_tw.apps import Apps
from socktopus_tw.errors import RelayError
from socktopus_tw.http.respond import forLog
from socktopus_tw.relay.registry import IRegistry
from socktopus_tw.relay.tokens import ExpiredToken, parseToken

log = Logger()


class Gatekeeper:
    """
    Admits tokens in the order of the SPEC's table: shape, age, app,
    signature; then the kick deny-list.

    @ivar tokenLifespan: seconds a token is valid either side of its stamp.
    """

    def __init__(
        self, apps: Apps, registry: IRegistry, clock: IReactorTime, tokenLifespan: float = 5.0
    ) -> None:
        self.apps = apps
        self.registry = registry
        self.clock = clock
        self.tokenLifespan = tokenLifespan

    def admit(self, token: str) -> tuple[str, str]:
        """
        Return the canonical app name and the connection id, or raise the
        L{RelayError} the client is answered with.
        """
        try:
            parsed = parseToken(token)
        except RelayError:
            log.info("Refused connection: malformed token")
            raise
        try:
            parsed.checkAge(self.clock.seconds() * 1000, self.tokenLifespan * 1000)
            secret = self.apps.secretFor(parsed.app)
            parsed.checkSignature(secret)
        except RelayError as e:
            # The token's names are the client's (a 3 kB app name, newlines):
            # escaped and cut, or a client could write lines into the log.
            log.info(
                "Refused connection {app}/{connectionId}: {why}",
                app=forLog(parsed.app),
                connectionId=forLog(parsed.connectionId),
                why=e.message,
            )
            raise
        app = parsed.app.lower()
        if self.registry.isKicked(app, parsed.connectionId, parsed.milliseconds):
            # The kicked client sees what it would have seen from the Go
            # original, which made kicks stick by waiting for tokens to expire.
            log.info(
                "Refused connection {app}/{connectionId}: kicked",
                app=forLog(app),
                connectionId=forLog(parsed.connectionId),
            )
            raise ExpiredToken()
        return app, parsed.connectionId
