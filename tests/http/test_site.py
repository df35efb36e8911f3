"""
Tests for L{socktopus_tw.http.site}: the twisted.web site every listener
serves, on the real daemon. (The fast path's tests, L{tests.http.test_fastpath},
compare it byte for byte with this site's channel.)
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.daemon import Daemon


class HeadTests(TestCase):
    @inlineCallbacks
    def test_headAnswersLikeGetWithoutBody(self):
        """
        A monitor that checks with HEAD gets the status and headers, and no body.
        """
        daemon = Daemon(self)
        status, body, response = yield daemon.request("HEAD", "/health")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"15"])
        # The connection is still usable afterwards: the head was not left pending.
        self.assertEqual((yield daemon.request("GET", "/health"))[:2], (200, {"status": "ok"}))
