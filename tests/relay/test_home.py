"""
Tests for L{socktopus_tw.relay.home}: C{GET /} (SPEC §3.6) on the real
daemon, read as a browser would.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.support.daemon import OTHER_APP, OTHER_SECRET, SECRET
from tests.support.relay import RelayApiTestCase


class _Cells(HTMLParser):
    """
    The text of every table row of a page.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


SECRET_LINE = re.compile(r"MYAPP_SOCKTOPUS_SECRET=([A-Za-z0-9_-]+)")


class HomePageTests(RelayApiTestCase):
    """
    GET / (SPEC §3.6).
    """

    @inlineCallbacks
    def getHome(self):
        status, body, response = yield self.daemon.request("GET", "/")
        self.assertEqual(status, 200)
        self.assertIsInstance(body, bytes)
        contentType = response.headers.getRawHeaders(b"content-type")[0]
        self.assertTrue(contentType.startswith(b"text/html"), contentType)
        return body.decode("utf-8")

    @inlineCallbacks
    def test_listsAppsAndCounts(self):
        """The home page does not show my apps or how many clients are connected."""
        yield self.daemon.connect("c1")
        yield self.daemon.connect("c2")
        yield self.daemon.connect("x", app=OTHER_APP, secret=OTHER_SECRET)
        page = yield self.getHome()
        self.assertTrue(page.lstrip().lower().startswith("<!doctype html"))
        cells = _Cells()
        cells.feed(page)
        self.assertIn(["demo", "2"], cells.rows)
        self.assertIn(["other", "1"], cells.rows)
        text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
        self.assertIn("3 clients connected", text)

    @inlineCallbacks
    def test_showsZeroCounts(self):
        """An app with nobody connected is missing from the home page."""
        page = yield self.getHome()
        cells = _Cells()
        cells.feed(page)
        self.assertIn(["demo", "0"], cells.rows)
        self.assertIn(["other", "0"], cells.rows)
        self.assertIn("0 clients connected", " ".join(re.sub(r"<[^>]+>", " ", page).split()))

    @inlineCallbacks
    def test_selfContained(self):
        """The home page loads fonts or scripts from the internet and breaks offline."""
        page = yield self.getHome()
        lowered = page.lower()
        for forbidden in [
            "http://",
            "https://",
            "<script",
            "<link",
            "@import",
            "url(",
            "<img",
            "<iframe",
            "src=",
        ]:
            self.assertNotIn(forbidden, lowered)

    @inlineCallbacks
    def test_neverShowsSecrets(self):
        """The home page leaks my app's secret to anyone who opens it."""
        yield self.daemon.connect("c1")
        page = yield self.getHome()
        self.assertNotIn(SECRET, page)
        self.assertNotIn(OTHER_SECRET, page)
        self.assertNotIn("DEMO_SOCKTOPUS_SECRET", page)
        self.assertNotIn("OTHER_SOCKTOPUS_SECRET", page)

    @inlineCallbacks
    def test_freshSecretOnEveryLoad(self):
        """The home page shows the same 'new' secret to everybody, or a short one."""
        first = SECRET_LINE.findall((yield self.getHome()))
        second = SECRET_LINE.findall((yield self.getHome()))
        self.assertEqual(len(first), 1)
        self.assertEqual(len(second), 1)
        self.assertGreaterEqual(len(first[0]), 43)
        self.assertGreaterEqual(len(second[0]), 43)
        self.assertNotEqual(first, second)
