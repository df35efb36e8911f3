# -*- test-case-name: tests.test_health -*-
"""
C{GET /health}: the process answers. C{GET /ready}: and its database does,
so a load balancer sends no traffic to a daemon that would answer 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.server import Request

from socktopus_tw.db import Database, Unreachable
from socktopus_tw.errors import ServiceUnavailable
from socktopus_tw.http.respond import JsonResource

#: Seconds C{/ready} waits for the database: less than a load balancer's
#: usual 2 s check timeout, so a frozen database is a 503 the balancer sees,
#: not a check that timed out; and less than the requests' own deadline.
READY_TIMEOUT = 1.5


class Health(JsonResource):
    """
    C{GET /health}: the process answers.
    """

    def json_GET(self, request: Request) -> dict[str, Any]:
        return {"status": "ok"}


class Ready(JsonResource):
    """
    C{GET /ready}: 200 when the database answers within C{timeout} seconds,
    503 when it is down, or frozen and has not answered by then.
    """

    def __init__(
        self,
        database: Database,
        timeout: float = READY_TIMEOUT,
        checks: list[Callable[[], None]] = (),
    ) -> None:
        """
        @param checks: what else must be up: each raises
            L{ServiceUnavailable} (at once) when it is not, e.g. the
            cluster's Redis.
        """
        super().__init__()
        self.database = database
        self.timeout = timeout
        self.checks = list(checks)

    async def json_GET(self, request: Request) -> dict[str, Any]:
        for check in self.checks:
            check()
        try:
            await self.database.ping(timeout=self.timeout)
        except Unreachable:
            raise ServiceUnavailable("Database unavailable") from None
        return {"status": "ready"}
