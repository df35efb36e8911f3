"""
Tests for L{socktopus_tw.relay.home}: C{GET /} (SPEC §3.6) on the real
daemon, read as a browser would, and L{HomeResource} on its own, with a
L{Clock}. The page in a real browser is L{tests.e2e.test_home_page}.
"""

from __future__ import annotations

import json
import re
from html import escape
from html.parser import HTMLParser
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

import socktopus_tw
from socktopus_tw.apps import Apps
from socktopus_tw.relay.home import HomeResource, formatUptime
from socktopus_tw.relay.registry import LocalRegistry
from tests.support.daemon import APP, OTHER_APP, OTHER_SECRET, SECRET
from tests.support.fakes import FakeConnection
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
            "<link",
            "@import",
            "url(",
            "<img",
            "<iframe",
            "src=",
        ]:
            self.assertNotIn(forbidden, lowered)
        # Its one script is inline, and the CSP runs nothing else.
        self.assertEqual(len(re.findall(r"<script", lowered)), 1)
        self.assertEqual(len(re.findall(r'<script nonce="[a-z0-9_-]+">', lowered)), 1)

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

    @inlineCallbacks
    def test_jsonView(self):
        """GET /?format=json does not give the counts the page refreshes from."""
        yield self.daemon.connect("c1")
        status, body, response = yield self.daemon.request("GET", "/?format=json")
        self.assertEqual(status, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertEqual(
            {k: v for k, v in body.items() if k != "uptimeSeconds"},
            {
                "version": socktopus_tw.__version__,
                "clients": 1,
                "nodes": 1,
                "apps": {"demo": 1, "other": 0},
            },
        )
        self.assertIsInstance(body["uptimeSeconds"], int)

    @inlineCallbacks
    def test_cspAllowsOnlyItsOwnScript(self):
        """The page's script is blocked by its own CSP, or the CSP allows any script."""
        status, body, response = yield self.daemon.request("GET", "/")
        [csp] = response.headers.getRawHeaders(b"content-security-policy")
        nonce = re.fullmatch(
            rb"default-src 'none'; style-src 'unsafe-inline'; "
            rb"script-src 'nonce-([A-Za-z0-9_-]+)'; connect-src 'self'",
            csp,
        )
        self.assertIsNotNone(nonce, csp)
        self.assertIn(b'<script nonce="' + nonce.group(1) + b'">', body)

    @inlineCallbacks
    def test_listsWhatTheDaemonServes(self):
        """The overview of endpoints leaves out what the daemon serves, or links no /health."""
        page = yield self.getHome()
        for path in ["/recieve", "/receive", "/send", "/kick", "/health", "/ready", "/login"]:
            self.assertIn(f"<code>{path}", page)
        self.assertIn('<a href="health">', page)
        # No --metrics-listen here: nothing serves /metrics.
        self.assertNotIn("/metrics", page)


def render(resource: HomeResource, query: dict[bytes, list[bytes]] | None = None):
    """
    C{GET /} (with C{query}) of C{resource}: the finished request and its body.
    """
    request = DummyRequest([])
    # What writeJson reads of a real Request, which DummyRequest lacks.
    request.path = b"/"
    request._disconnected = False
    request.args = query or {}
    resource.render(request)
    assert request.finished, "the request was not answered"
    return request, b"".join(request.written)


def header(request: DummyRequest, name: bytes) -> bytes:
    return request.responseHeaders.getRawHeaders(name)[0]


class Cluster(LocalRegistry):
    """
    A registry that reports more nodes than its own, as a cluster's does.
    """

    def nodes(self) -> int:
        return 3


class HomeResourceTests(SynchronousTestCase):
    """
    L{HomeResource} on its own, its time from a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.apps = Apps({APP: SECRET, OTHER_APP: OTHER_SECRET})
        self.registry = LocalRegistry(self.clock)
        self.home = HomeResource(self.apps, self.registry, clock=self.clock)

    def connect(self, app: str, connectionId: str) -> None:
        self.registry.register(FakeConnection(self.registry, app, connectionId))

    def status(self, home: HomeResource | None = None) -> Any:
        request, body = render(home or self.home, {b"format": [b"json"]})
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(header(request, b"content-type"), b"application/json")
        return json.loads(body)

    def page(self, home: HomeResource | None = None) -> str:
        request, body = render(home or self.home)
        self.assertEqual(header(request, b"content-type"), b"text/html; charset=utf-8")
        return body.decode("utf-8")

    def test_jsonListsEveryApp(self) -> None:
        """The JSON view leaves out an app nobody is connected to, or miscounts."""
        self.connect(APP, "c1")
        self.connect(APP, "c2")
        self.assertEqual(
            self.status(),
            {
                "version": socktopus_tw.__version__,
                "uptimeSeconds": 0,
                "clients": 2,
                "nodes": 1,
                "apps": {"demo": 2, "other": 0},
            },
        )

    def test_jsonNodes(self) -> None:
        """A cluster's live nodes are not what the home page reports."""
        registry = Cluster(self.clock)
        home = HomeResource(self.apps, registry, clock=self.clock)
        self.assertEqual(self.status(home)["nodes"], 3)
        page = self.page(home)
        self.assertIn('<strong id="nodes">3</strong> <span id="nodes-noun">nodes</span>', page)

    def test_unknownFormat(self) -> None:
        """An unknown ?format= is answered with the page, as if it had been understood."""
        request, body = render(self.home, {b"format": [b"xml"]})
        self.assertEqual(request.responseCode, 400)
        self.assertEqual(json.loads(body)["code"], 400)

    def test_uptime(self) -> None:
        """The uptime is not the time since the daemon started, on the reactor's clock."""
        self.clock.advance(3725)
        self.assertEqual(self.status()["uptimeSeconds"], 3725)
        self.assertIn('up <span id="uptime">1 h 2 min</span>', self.page())
        started = HomeResource(self.apps, self.registry, clock=self.clock, started=0.0)
        self.assertEqual(self.status(started)["uptimeSeconds"], 4725)

    def test_formatUptime(self) -> None:
        """The uptime is shown in units nobody reads at a glance."""
        self.assertEqual(
            [formatUptime(s) for s in [0, 42.9, 60, 3599, 3600, 90061, -5]],
            ["0 s", "42 s", "1 min 0 s", "59 min 59 s", "1 h 0 min", "1 d 1 h", "0 s"],
        )

    def test_version(self) -> None:
        """The page does not say which Socktopus is running."""
        version = escape(socktopus_tw.__version__)
        self.assertIn(f'Version <span id="version">{version}</span>', self.page())

    def test_countsOnThePage(self) -> None:
        """The page's counts are not the registry's."""
        self.connect(APP, "c1")
        self.connect(OTHER_APP, "x")
        self.connect(OTHER_APP, "y")
        cells = _Cells()
        cells.feed(self.page())
        self.assertIn(["demo", "1"], cells.rows)
        self.assertIn(["other", "2"], cells.rows)
        self.assertIn('<strong id="total">3</strong>', self.page())

    def test_escapesAppNames(self) -> None:
        """An app name with markup in it is written into the page as markup."""
        name = '<b x="1">&amp;'
        home = HomeResource(Apps({name: SECRET}), self.registry, clock=self.clock)
        page = self.page(home)
        self.assertNotIn(name, page)
        self.assertIn(f"<td>{escape(name)}</td>", page)
        self.assertIn(f'data-app="{escape(name)}"', page)
        self.assertEqual(self.status(home)["apps"], {name: 0})

    def test_noSecretAnywhere(self) -> None:
        """The page or its JSON view shows an existing app's secret."""
        self.connect(APP, "c1")
        _, page = render(self.home)
        _, status = render(self.home, {b"format": [b"json"]})
        for body in (page, status):
            self.assertNotIn(SECRET.encode(), body)
            self.assertNotIn(OTHER_SECRET.encode(), body)
            self.assertNotIn(b"DEMO_SOCKTOPUS_SECRET", body)

    def test_nonceMatchesTheScript(self) -> None:
        """The CSP's nonce is not the script's, or is the same for every response."""
        nonces = []
        for _ in range(2):
            request, body = render(self.home)
            csp = header(request, b"content-security-policy")
            [nonce] = re.findall(rb"'nonce-([A-Za-z0-9_-]{22,})'", csp)
            self.assertEqual(re.findall(rb"<script[^>]*>", body), [b'<script nonce="%s">' % nonce])
            nonces.append(nonce)
        self.assertNotEqual(nonces[0], nonces[1])
        self.assertEqual(
            csp,
            b"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-%s'; "
            b"connect-src 'self'" % nonces[1],
        )
        self.assertEqual(header(request, b"cache-control"), b"no-store")

    def test_copyButtons(self) -> None:
        """The secret line or the token command has no copy button."""
        page = self.page()
        for target in ["new-secret", "token-command"]:
            self.assertIn(f'id="{target}"', page)
            self.assertIn(f'<button type="button" data-copy="{target}" hidden>Copy</button>', page)

    def test_endpointsByWhatIsMounted(self) -> None:
        """The overview lists what the daemon does not serve."""
        page = self.page()
        self.assertIn("<code>/send</code>", page)
        self.assertNotIn("/health", page)
        self.assertNotIn("/login", page)
        self.assertNotIn("/metrics", page)
        everything = HomeResource(
            self.apps,
            self.registry,
            clock=self.clock,
            accounts=True,
            health=True,
            metricsListener=True,
        )
        page = self.page(everything)
        for path in ["/send", "/health", "/ready", "/login", "/users/{id}/registered", "/metrics"]:
            self.assertIn(f"<code>{escape(path)}</code>", page)
