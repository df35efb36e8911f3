# -*- test-case-name: tests.test_health -*-
"""
C{GET /health}: the process answers. C{GET /ready}: and its database does,
so a load balancer sends no traffic to a daemon that would answer 503.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from socktopus_tw.db import Database, Unreachable
from socktopus_tw.errors import ServiceUnavailable
from socktopus_tw.http.respond import JsonResource


class Health(JsonResource):
    def json_GET(self, request: Request) -> dict[str, Any]:
        return {"status": "ok"}


class Ready(JsonResource):
    def __init__(self, database: Database) -> None:
        super().__init__()
        self.database = database

    async def json_GET(self, request: Request) -> dict[str, Any]:
        try:
            await self.database.ping()
        except Unreachable:
            raise ServiceUnavailable("Database unavailable") from None
        return {"status": "ready"}
