# -*- test-case-name: tests.relay.test_home -*-
"""
C{GET /}: a self-contained status page (SPEC §3.6).

No CDN, fonts or scripts: the daemon may run offline, and the page sets a
Content-Security-Policy that forbids loading anything at all.
"""

from __future__ import annotations

import secrets
from html import escape

from twisted.web.server import Request

from socktopus_tw.apps import Apps, environmentLine
from socktopus_tw.http.respond import HANDLED, JsonResource
from socktopus_tw.relay.registry import IRegistry

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Socktopus</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 46rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.6rem; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .2rem 1rem .2rem 0; text-align: left; }}
code, pre {{ font: 14px ui-monospace, monospace; background: #f3f3f3; }}
pre {{ padding: .8rem; overflow-x: auto; }}
.muted {{ color: #666; }}
</style>
</head>
<body>
<h1>Socktopus</h1>
<p><strong id="total">{total}</strong> client{plural} connected.</p>
<h2>Apps</h2>
{apps}
<h2>Add an app</h2>
<p>A freshly generated secret (a new one on every load; nothing is stored).
Add this line to the daemon's environment or <code>.env</code> file, replacing
<code>MYAPP</code> with your app's name, and restart:</p>
<pre id="new-secret">{line}</pre>
<p class="muted">Backends hand their clients tokens signed with the secret
(<code>socktopus token APP SECRET CONNECTION_ID</code> prints one) and call
<code>POST /send</code> and <code>POST /kick</code>.</p>
</body>
</html>
"""


class HomeResource(JsonResource):
    """
    App names and connection counts, never a secret of an existing app.
    Only its errors are JSON.
    """

    def __init__(self, apps: Apps, registry: IRegistry) -> None:
        super().__init__()
        self.apps = apps
        self.registry = registry

    def json_GET(self, request: Request) -> object:
        counts = self.registry.counts()
        names = self.apps.names()
        if names:
            rows = "".join(
                f"<tr><td>{escape(name)}</td><td>{counts.get(name, 0)}</td></tr>" for name in names
            )
            apps = f"<table><tr><th>App</th><th>Connected</th></tr>{rows}</table>"
        else:
            apps = (
                "<p>No apps yet: the daemon serves an app when its environment "
                "holds <code>&lt;APP&gt;_SOCKTOPUS_SECRET</code>.</p>"
            )
        total = self.registry.count()
        # 48 random bytes, URL-safe base64: 64 characters, no padding.
        line = environmentLine("MYAPP", secrets.token_urlsafe(48))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(
            b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"
        )
        page = _PAGE.format(
            total=total, plural="" if total == 1 else "s", apps=apps, line=escape(line)
        )
        request.write(page.encode("utf-8"))
        request.finish()
        return HANDLED
