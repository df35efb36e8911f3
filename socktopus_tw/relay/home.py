# -*- test-case-name: tests.relay.test_home,tests.e2e.test_home_page -*-
"""
C{GET /}: a self-contained status page (SPEC §3.6) that an operator can
keep open.

It shows Socktopus' version and uptime, the connected clients (total and
per app) and live nodes, what the daemon serves, and a freshly generated
secret with the line that adds it as a new app, each command with a copy
button.

C{GET /?format=json} is the same status as JSON, which the page fetches
every few seconds to refresh its counts without a reload::

    {"version": "1.2.3", "uptimeSeconds": 3600, "clients": 3, "nodes": 1,
     "apps": {"demo": 2, "other": 1}}

Every configured app is listed, with 0 when nobody is connected; never a
secret. A query parameter rather than C{Accept} negotiation: a link or
C{curl} shows what it asks for, and no cache has to vary on a header.
Any other C{format} is a 400.

No CDN, fonts or external scripts: the daemon may run offline. The page's
Content-Security-Policy forbids loading anything except its own inline
script (allowed by a nonce drawn for each response) and that JSON view
(C{connect-src 'self'}).
"""

from __future__ import annotations

import secrets
from html import escape
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

import socktopus_tw
from socktopus_tw.apps import Apps, environmentLine
from socktopus_tw.errors import MalformedRequest
from socktopus_tw.http.respond import HANDLED, JsonResource
from socktopus_tw.relay.registry import IRegistry

#: How often the page asks for fresh counts, in milliseconds.
REFRESH_MS = 3000

#: (method, path, what it does): the relay's own endpoints, mounted by
#: L{socktopus_tw.relay.routes.routes} next to this page.
RELAY_ENDPOINTS = [
    ("GET", "/", "this page; <code>/?format=json</code> is its status as JSON"),
    (
        "GET",
        "/recieve?token=TOKEN",
        "the clients' WebSocket (also <code>/receive</code>, the right spelling)",
    ),
    ("POST", "/send", "a backend sends messages to connections"),
    ("POST", "/kick", "a backend disconnects connections"),
    ("POST", "/presence", "a backend asks which connections are connected"),
]
HEALTH_ENDPOINTS = [
    ("GET", "/health", '<a href="health">the process answers</a>'),
    ("GET", "/ready", "and so does its database"),
]
ACCOUNTS_ENDPOINTS = [
    ("POST", "/users", "create a user"),
    ("GET", "/users/{id}/register?code=CODE", "the registration link mailed to a user"),
    ("GET", "/users/{id}/registered", "whether a user has registered"),
    ("GET", "/users/getID?username=NAME", "user ids by name"),
    ("POST", "/login", "a session secret for a user and password"),
    ("POST", "/verifySecret", "check a session secret and extend it"),
    ("POST", "/logout", "end a session"),
    ("POST", "/changePassword", "change a password; ends every session"),
    ("POST", "/authHeaders", "check a request's Auth Headers"),
]
METRICS_ENDPOINTS = [
    ("GET", "/metrics", "Prometheus metrics, on the separate metrics listener, not this port"),
]

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Socktopus</title>
<style>
:root {{ color-scheme: light dark; }}
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 46rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; background: #fff; }}
h1 {{ font-size: 1.6rem; margin-bottom: 0; }}
h2 {{ font-size: 1.2rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .2rem 1rem .2rem 0; text-align: left; vertical-align: top;
          overflow-wrap: anywhere; }}
.count {{ text-align: right; font-variant-numeric: tabular-nums; }}
code {{ font: 14px/1.5 ui-monospace, monospace; background: #f3f3f3;
        overflow-wrap: anywhere; }}
.method {{ white-space: nowrap; overflow-wrap: normal; }}
/* At full width the longest path fits on one line. */
@media (min-width: 48rem) {{ .path code {{ white-space: nowrap; }} }}
/* A long line wraps inside its box: never a horizontal scrollbar. */
.command {{ display: flex; gap: .5rem; align-items: flex-start; margin: 1rem 0; }}
.command code {{ flex: 1; min-width: 0; display: block; padding: .6rem .8rem;
                 white-space: pre-wrap; }}
/* On a phone, each endpoint on lines of its own rather than three thin columns. */
@media (max-width: 36rem) {{
  #endpoints tr:first-child {{ display: none; }}
  #endpoints tr, #endpoints td {{ display: block; padding: 0; }}
  #endpoints tr {{ margin-bottom: .6rem; }}
  #endpoints td.method {{ display: inline; padding-right: .5rem; }}
  #endpoints td.path {{ display: inline; }}
}}
button {{ font: 14px/1.5 system-ui, sans-serif; padding: .5rem .8rem; cursor: pointer; }}
.muted {{ color: #666; }}
@media (prefers-color-scheme: dark) {{
  body {{ color: #ddd; background: #181818; }}
  code {{ background: #2a2a2a; }}
  .muted {{ color: #999; }}
}}
</style>
</head>
<body data-refresh-ms="{refreshMs}">
<h1>Socktopus</h1>
<p class="muted">Version <span id="version">{version}</span>,
up <span id="uptime">{uptime}</span>.</p>
<p><strong id="total">{total}</strong> <span id="total-noun">{clientNoun}</span> connected
on <strong id="nodes">{nodes}</strong> <span id="nodes-noun">{nodeNoun}</span>.
<span id="refresh" class="muted" role="status">Counts refresh every {refreshSeconds}
seconds.</span></p>
<h2>Apps</h2>
{apps}
<h2>Add an app</h2>
<p>A freshly generated secret (a new one on every load; nothing is stored).
Add this line to the daemon's environment or <code>.env</code> file, replacing
<code>MYAPP</code> with your app's name, and restart:</p>
<div class="command"><code id="new-secret">{line}</code>{copySecret}</div>
<p class="muted">Backends hand their clients tokens signed with the secret
(this prints one) and call <code>POST /send</code> and <code>POST /kick</code>:</p>
<div class="command"><code id="token-command">socktopus token APP SECRET CONNECTION_ID</code>
{copyToken}</div>
<h2>Endpoints</h2>
<table id="endpoints"><tr><th class="method">Method</th><th>Path</th><th>What</th></tr>
{endpoints}</table>
<script nonce="{nonce}">{script}</script>
</body>
</html>
"""

# Static: nothing from a request or the environment is ever put in here, so
# there is nothing to escape in a script context. The counts come as JSON.
_SCRIPT = """
"use strict";
const REFRESH_MS = Number(document.body.dataset.refreshMs);

function plural(count, noun) { return count === 1 ? noun : noun + "s"; }

// As formatUptime in home.py: the two largest units from the first not zero.
function formatUptime(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const units = [[Math.floor(s / 86400), "d"], [Math.floor(s % 86400 / 3600), "h"],
                 [Math.floor(s % 3600 / 60), "min"], [s % 60, "s"]];
  let first = units.findIndex(([value]) => value > 0);
  if (first < 0) first = units.length - 1;
  return units.slice(first, first + 2).map(([value, unit]) => value + " " + unit).join(" ");
}

function show(status) {
  document.getElementById("version").textContent = status.version;
  document.getElementById("uptime").textContent = formatUptime(status.uptimeSeconds);
  document.getElementById("total").textContent = status.clients;
  document.getElementById("total-noun").textContent = plural(status.clients, "client");
  document.getElementById("nodes").textContent = status.nodes;
  document.getElementById("nodes-noun").textContent = plural(status.nodes, "node");
  for (const row of document.querySelectorAll("tr[data-app]")) {
    row.querySelector(".count").textContent = status.apps[row.dataset.app] ?? 0;
  }
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const note = document.getElementById("refresh");
  try {
    const response = await fetch("?format=json", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    show(await response.json());
    note.textContent = "Counts refresh every " + REFRESH_MS / 1000 + " seconds.";
  } catch (error) {
    note.textContent = "Not refreshed since " + new Date().toLocaleTimeString() +
      " (" + error.message + "); retrying.";
  }
  timer = setTimeout(refresh, REFRESH_MS);
}
timer = setTimeout(refresh, REFRESH_MS);
// A tab in the background is throttled: catch up as soon as it is looked at.
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

// Over plain HTTP to another host the page is no secure context and has no
// navigator.clipboard; copying a selection still works there.
async function copy(text, node) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return true;
  }
  const range = document.createRange();
  range.selectNodeContents(node);
  getSelection().removeAllRanges();
  getSelection().addRange(range);
  return document.execCommand("copy");
}

for (const button of document.querySelectorAll("button[data-copy]")) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    const node = document.getElementById(button.dataset.copy);
    let copied = false;
    try { copied = await copy(node.textContent, node); } catch (error) { copied = false; }
    button.textContent = copied ? "Copied" : "Press Ctrl+C";
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
}
"""


def _copyButton(target: str) -> str:
    # Hidden until the script runs: without it the button could do nothing.
    return f'<button type="button" data-copy="{target}" hidden>Copy</button>'


def formatUptime(seconds: float) -> str:
    """
    C{seconds} as its two largest units from the first that is not zero:
    C{"3 d 4 h"}, C{"5 min 0 s"}, C{"42 s"}. The page's script formats the
    refreshed uptime the same way.
    """
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "min"), (s, "s")]
    first = next((i for i, (value, _) in enumerate(units) if value), len(units) - 1)
    return " ".join(f"{value} {unit}" for value, unit in units[first : first + 2])


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def _endpointRows(endpoints: list[tuple[str, str, str]]) -> str:
    # The descriptions are this module's own HTML; only the paths are text.
    return "".join(
        f'<tr><td class="method">{method}</td><td class="path"><code>{escape(path)}</code></td>'
        f"<td>{what}</td></tr>"
        for method, path, what in endpoints
    )


class HomeResource(JsonResource):
    """
    App names and connection counts, never a secret of an existing app.
    Its errors, and the status view C{?format=json}, are JSON.

    @param clock: where the uptime's time comes from (the reactor).
    @param started: when the daemon started, in C{clock}'s seconds; by
        default, when this resource is made, as the daemon is composed.
    @param accounts, health, metricsListener: whether the daemon also
        serves the accounts service, C{/health} and C{/ready}, and C{/metrics}
        on its own listener, for the overview of endpoints.
    """

    def __init__(
        self,
        apps: Apps,
        registry: IRegistry,
        *,
        clock: IReactorTime | None = None,
        started: float | None = None,
        accounts: bool = False,
        health: bool = False,
        metricsListener: bool = False,
    ) -> None:
        super().__init__()
        if clock is None:
            from twisted.internet import reactor as clock
        self.apps = apps
        self.registry = registry
        self.clock = clock
        self.started = clock.seconds() if started is None else started
        endpoints = list(RELAY_ENDPOINTS)
        if health:
            endpoints += HEALTH_ENDPOINTS
        if accounts:
            endpoints += ACCOUNTS_ENDPOINTS
        if metricsListener:
            endpoints += METRICS_ENDPOINTS
        self._endpoints = _endpointRows(endpoints)

    def status(self) -> dict[str, Any]:
        """
        What C{GET /?format=json} answers: every configured app with its
        count, 0 included.
        """
        counts = self.registry.counts()
        return {
            "version": socktopus_tw.__version__,
            "uptimeSeconds": max(0, int(self.clock.seconds() - self.started)),
            "clients": self.registry.count(),
            "nodes": self.registry.nodes(),
            "apps": {name: counts.get(name, 0) for name in self.apps.names()},
        }

    def json_GET(self, request: Request) -> object:
        request.setHeader(b"cache-control", b"no-store")
        formats = request.args.get(b"format", [])
        if formats == [b"json"]:
            return self.status()
        if formats:
            raise MalformedRequest("Unknown format: the only one is format=json")
        self._writePage(request, self.status())
        return HANDLED

    def _writePage(self, request: Request, status: dict[str, Any]) -> None:
        if status["apps"]:
            rows = "".join(
                f'<tr data-app="{escape(name)}"><td>{escape(name)}</td>'
                f'<td class="count">{count}</td></tr>'
                for name, count in status["apps"].items()
            )
            apps = (
                '<table id="apps"><tr><th>App</th><th class="count">Connected</th></tr>'
                f"{rows}</table>"
            )
        else:
            apps = (
                "<p>No apps yet: the daemon serves an app when its environment "
                "holds <code>&lt;APP&gt;_SOCKTOPUS_SECRET</code>.</p>"
            )
        # 48 random bytes, URL-safe base64: 64 characters, no padding.
        line = environmentLine("MYAPP", secrets.token_urlsafe(48))
        # A fresh nonce per response: only the script this page carries runs.
        nonce = secrets.token_urlsafe(18)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(
            b"content-security-policy",
            b"default-src 'none'; style-src 'unsafe-inline'; "
            b"script-src 'nonce-%s'; connect-src 'self'" % nonce.encode("ascii"),
        )
        page = _PAGE.format(
            version=escape(status["version"]),
            uptime=formatUptime(status["uptimeSeconds"]),
            total=status["clients"],
            clientNoun=_plural(status["clients"], "client"),
            nodes=status["nodes"],
            nodeNoun=_plural(status["nodes"], "node"),
            refreshMs=REFRESH_MS,
            refreshSeconds=REFRESH_MS // 1000,
            apps=apps,
            line=escape(line),
            copySecret=_copyButton("new-secret"),
            copyToken=_copyButton("token-command"),
            endpoints=self._endpoints,
            nonce=nonce,
            script=_SCRIPT,
        )
        request.write(page.encode("utf-8"))
        request.finish()
