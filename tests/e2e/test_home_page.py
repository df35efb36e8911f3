"""
The home page (L{socktopus_tw.relay.home}) in a real browser: Debian's
Chromium, headless, driven by playwright-core from sdk/js, loads C{GET /}
of the real daemon at a desktop and a phone's width, while this test
connects real WebSocket clients and watches the counts change on the page
without a reload. Node and Chromium are requirements of the suite, so a
missing one fails here rather than skipping.

The driver is a small Node script written into the test's directory; it
reports what it sees as C{STEP name {json}} lines and waits, on its stdin,
for this test to say what the page should show next. The screenshots it
takes at each width are left in that directory, and their paths printed.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

import socktopus_tw
from tests.support.daemon import OTHER_APP, OTHER_SECRET, Daemon
from tests.support.npm import ensureSdkModules
from tests.support.process import ROOT, Process, run

SDK = os.path.join(ROOT, "sdk", "js")
PLAYWRIGHT = os.path.join(SDK, "node_modules", "playwright-core")
CHROMIUM = "/usr/bin/chromium"

#: Seconds to wait for any one step of the browser: the page refreshes its
#: counts every 3 s, Chromium starts in one or two.
STEP_DEADLINE = 60

DRIVER = r"""
"use strict";
const assert = require("node:assert/strict");
const path = require("node:path");
const readline = require("node:readline");
const { chromium } = require(process.env.PLAYWRIGHT);

const PAGE_URL = process.env.HOME_URL;
const OUT = process.env.ARTIFACTS;
// Each wait of the page has its own deadline, well inside the test's.
const DEADLINE_MS = 20000;

const lines = readline.createInterface({ input: process.stdin });
const queue = [];
const waiting = [];
lines.on("line", (line) => (waiting.length ? waiting.shift()(line) : queue.push(line)));
const nextLine = () =>
  new Promise((resolve) => (queue.length ? resolve(queue.shift()) : waiting.push(resolve)));

function step(name, facts) {
  process.stdout.write(`STEP ${name} ${JSON.stringify(facts)}\n`);
}

const problems = [];
function watch(page) {
  page.on("pageerror", (error) => problems.push(String(error)));
  // A CSP violation is reported on the console as an error.
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") problems.push(message.text());
  });
}

async function layout(page, name) {
  const facts = await page.evaluate(() => {
    const root = document.documentElement;
    const secret = document.getElementById("new-secret");
    const copy = document.querySelector('button[data-copy="new-secret"]');
    return {
      scrollWidth: root.scrollWidth,
      clientWidth: root.clientWidth,
      secretScrollWidth: secret.scrollWidth,
      secretClientWidth: secret.clientWidth,
      secretRight: secret.getBoundingClientRect().right,
      copyRight: copy.getBoundingClientRect().right,
    };
  });
  facts.screenshot = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: facts.screenshot, fullPage: true });
  return facts;
}

async function content(page) {
  return page.evaluate(() => ({
    version: document.getElementById("version").textContent,
    total: document.getElementById("total").textContent,
    nodes: document.getElementById("nodes").textContent,
    apps: Object.fromEntries(
      [...document.querySelectorAll("tr[data-app]")].map((row) => [
        row.dataset.app,
        row.querySelector(".count").textContent,
      ]),
    ),
    secretLine: document.getElementById("new-secret").textContent,
    buttons: [...document.querySelectorAll("button[data-copy]")].map((b) => ({
      target: b.dataset.copy,
      hidden: b.hidden,
      text: b.textContent,
    })),
    healthLink: document.querySelector('a[href="health"]')?.href ?? null,
    endpoints: [...document.querySelectorAll("#endpoints code")].map((c) => c.textContent),
    text: document.body.innerText,
  }));
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], {
      origin: new URL(PAGE_URL).origin,
    });
    const page = await context.newPage();
    page.setDefaultTimeout(DEADLINE_MS);
    watch(page);
    let navigations = 0;
    page.on("framenavigated", (frame) => frame === page.mainFrame() && (navigations += 1));
    await page.goto(PAGE_URL);
    // The script has run once the copy buttons show.
    await page.locator('button[data-copy="new-secret"]').waitFor({ state: "visible" });
    await page.evaluate(() => (window.notReloaded = true));
    step("loaded", { ...(await content(page)), layout: await layout(page, "home-1200x800") });

    for (;;) {
      // "expect NAME {json}": wait for the page to show that, report as step NAME.
      const [, command, name, argument] = /^(\S+)(?: (\S+) (.*))?$/.exec(await nextLine());
      if (command === "finish") break;
      assert.equal(command, "expect");
      const want = JSON.parse(argument);
      await page.waitForFunction(
        (want) => {
          const text = (id) => document.getElementById(id).textContent;
          if (text("total") !== String(want.total)) return false;
          return Object.entries(want.apps).every(([app, count]) => {
            const cell = document.querySelector(`tr[data-app="${CSS.escape(app)}"] .count`);
            return cell !== null && cell.textContent === String(count);
          });
        },
        want,
        { timeout: DEADLINE_MS, polling: 100 },
      );
      step(name, {
        ...(await content(page)),
        navigations,
        notReloaded: await page.evaluate(() => window.notReloaded === true),
      });
    }

    const copy = page.locator('button[data-copy="new-secret"]');
    await copy.click();
    await page.waitForFunction(
      () => document.querySelector('button[data-copy="new-secret"]').textContent === "Copied",
      null,
      { timeout: DEADLINE_MS, polling: 50 },
    );
    const clipboard = await page.evaluate(() => navigator.clipboard.readText());
    const copied = { button: await copy.textContent(), clipboard };

    const phone = await context.newPage();
    watch(phone);
    await phone.setViewportSize({ width: 375, height: 800 });
    await phone.goto(PAGE_URL);
    await phone.locator('button[data-copy="new-secret"]').waitFor({ state: "visible" });
    const narrow = { ...(await content(phone)), layout: await layout(phone, "home-375x800") };
    step("done", { copied, narrow, problems });
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${error.stack || error}\n`);
    process.exit(1);
  },
);
"""


class HomePageInChromiumTests(TestCase):
    """
    C{GET /} of the real daemon in headless Chromium.
    """

    # npm ci fetches playwright-core the first time; the test takes seconds.
    timeout = 300

    def setUp(self) -> None:
        self.daemon = Daemon(self)

    def tool(self, name: str, install: str) -> str:
        found = shutil.which(name)
        if found is None:
            self.fail(f"{name} is not installed: {install}")
        return found

    def npmEnvironment(self) -> dict[str, str]:
        return {
            name: value
            for name, value in os.environ.items()
            if name.startswith(("npm_config_", "NPM_CONFIG_", "NODE_EXTRA_CA_CERTS"))
        }

    @inlineCallbacks
    def playwright(self):
        """
        Make sure sdk/js has playwright-core, as the SDK's own test does.
        """
        env = {**self.npmEnvironment(), "HOME": os.environ.get("HOME", self.mktemp())}
        yield ensureSdkModules(self, env)

    def step(self, browser: Process, name: str):
        """
        Fire with the facts the driver reports at step C{name}, within the deadline.
        """
        d = browser.waitFor(rb"STEP " + name.encode() + rb" (.*)\n")
        d.addTimeout(STEP_DEADLINE, reactor)
        d.addCallback(lambda match: json.loads(match.group(1)))
        return d

    def tell(self, browser: Process, *words: Any) -> None:
        """
        A line for the driver: C{finish}, or C{expect NAME {json}}.
        """
        line = " ".join(w if isinstance(w, str) else json.dumps(w) for w in words)
        browser.transport.write(line.encode() + b"\n")

    def assertFits(self, layout: dict[str, Any], width: int) -> None:
        """
        At C{width}, nothing on the page is wider than the window, and the
        secret line wraps inside its box.
        """
        self.assertEqual(layout["clientWidth"], width, layout)
        self.assertLessEqual(layout["scrollWidth"], layout["clientWidth"], layout)
        self.assertLessEqual(layout["secretScrollWidth"], layout["secretClientWidth"], layout)
        self.assertLessEqual(layout["copyRight"], width, layout)
        with open(layout["screenshot"], "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        print(f"\nscreenshot at {width} px: {layout['screenshot']}")

    @inlineCallbacks
    def test_pageInChromium(self):
        """
        The page fits a desktop and a phone without scrolling sideways, shows
        the version and the apps, follows clients connecting and leaving
        without a reload, and copies the secret line.
        """
        if not os.access(CHROMIUM, os.X_OK):
            self.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium")
        node = self.tool("node", "the page's test needs Node 20 or newer")
        yield self.playwright()
        artifacts = os.path.abspath(self.mktemp())
        os.makedirs(artifacts)
        driver = os.path.join(artifacts, "driver.cjs")
        with open(driver, "w") as f:
            f.write(DRIVER)
        browser = run(
            self,
            node,
            driver,
            env={
                "PLAYWRIGHT": PLAYWRIGHT,
                "CHROMIUM": CHROMIUM,
                "HOME_URL": self.daemon.url + "/",
                "ARTIFACTS": artifacts,
            },
            path=artifacts,
        )

        loaded = yield self.step(browser, "loaded")
        self.assertEqual(loaded["version"], socktopus_tw.__version__)
        self.assertEqual(loaded["apps"], {"demo": "0", "other": "0"})
        self.assertEqual((loaded["total"], loaded["nodes"]), ("0", "1"))
        self.assertIn(f"Version {socktopus_tw.__version__}, up ", loaded["text"])
        self.assertRegex(loaded["secretLine"], r"^MYAPP_SOCKTOPUS_SECRET=[A-Za-z0-9_-]{64}$")
        self.assertEqual(
            [(b["target"], b["hidden"], b["text"]) for b in loaded["buttons"]],
            [("new-secret", False, "Copy"), ("token-command", False, "Copy")],
        )
        self.assertEqual(loaded["healthLink"], self.daemon.url + "/health")
        for path in ["/recieve?token=TOKEN", "/send", "/kick", "/health", "/ready", "/login"]:
            self.assertIn(path, loaded["endpoints"])
        self.assertFits(loaded["layout"], 1200)

        demo = yield self.daemon.connect("browser-test-1")
        yield self.daemon.connect("browser-test-2", app=OTHER_APP, secret=OTHER_SECRET)
        self.tell(browser, "expect", "both", {"total": 2, "apps": {"demo": 1, "other": 1}})
        updated = yield self.step(browser, "both")
        self.assertIn("2 clients connected on 1 node.", updated["text"])
        # The refreshed uptime, in the script's format (formatUptime's).
        self.assertRegex(updated["text"], r"Version [^,]+, up \d+ (s|min \d+ s)\.")
        self.assertEqual((updated["navigations"], updated["notReloaded"]), (1, True))

        demo.sendClose()
        yield demo.closed
        self.tell(browser, "expect", "one", {"total": 1, "apps": {"demo": 0, "other": 1}})
        updated = yield self.step(browser, "one")
        self.assertIn("1 client connected on 1 node.", updated["text"])
        self.assertEqual((updated["navigations"], updated["notReloaded"]), (1, True))

        self.tell(browser, "finish")
        done = yield self.step(browser, "done")
        self.assertEqual(done["copied"], {"button": "Copied", "clipboard": updated["secretLine"]})
        narrow = done["narrow"]
        self.assertEqual(narrow["apps"], {"demo": "0", "other": "1"})
        self.assertNotEqual(narrow["secretLine"], updated["secretLine"])
        self.assertFits(narrow["layout"], 375)
        # No CSP violation, no script error: the nonce let the script run.
        self.assertEqual(done["problems"], [])
        status = yield browser.ended
        self.assertEqual(status, 0, browser.errors.decode())
