"""
Tests for L{socktopus_tw.health}: C{/health} and C{/ready}, the checks a load
balancer makes, on the real daemon (and a MariaDB that goes down).
"""

from __future__ import annotations

import pymysql
from twisted.enterprise.adbapi import ConnectionLost
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.daemon import Daemon
from tests.support.mariadb import server


class HealthTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_healthAndReady(self):
        """
        A load balancer's checks pass on a healthy daemon.
        """
        daemon = Daemon(self)
        self.assertEqual((yield daemon.request("GET", "/health"))[:2], (200, {"status": "ok"}))
        self.assertEqual((yield daemon.request("GET", "/ready"))[:2], (200, {"status": "ready"}))

    @inlineCallbacks
    def test_notReadyWhileTheDatabaseIsDown(self):
        """
        While MariaDB is down the daemon says it is not ready (but alive),
        and ready again once it is back.
        """
        name = server().createDatabase("ready")
        self.addCleanup(server().dropDatabase, name)
        daemon = Daemon(self, "--database", server().url(name))
        self.assertEqual((yield daemon.request("GET", "/ready"))[0], 200)
        server().stop()
        try:
            status, body, _ = yield daemon.request("GET", "/ready")
            self.assertEqual(
                (status, body), (503, {"code": 503, "message": "Database unavailable"})
            )
            self.assertEqual((yield daemon.request("GET", "/health"))[0], 200)
        finally:
            server().start()
        for _attempt in range(50):
            status, body, _ = yield daemon.request("GET", "/ready")
            if status == 200:
                break
        self.assertEqual(status, 200)
        # adbapi logs the broken connections it drops during the outage.
        self.flushLoggedErrors(pymysql.err.Error, ConnectionLost)
