/**
 * The SDK in a real browser: Debian's Chromium, headless, driven by
 * playwright-core, loads a page from a server this test runs; the page
 * imports the browser build (src/index.js, as it is) and connects to the
 * daemon with a token this test mints in Node.
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { createTokenSync, RelayClient } from "socktopus";

import { APP, SECRET, startDaemon } from "../test-support/daemon.js";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), "../src");
const WORKED_EXAMPLE_SECRET =
  "3ar+0wLwgiltTXNZ/eprJ2NaWE7y5k+0r9ThN4+im8RHWH8ksB1xw4554hOTNF8H9rguMBfUaNRWztNQb+nz7A==";

const PAGE = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Socktopus in a browser</title>
<p>Status: <span id="status">loading</span></p>
<ul id="messages"></ul>
<p>Token: <code id="token"></code></p>
<p>HMAC: <code id="hmac"></code></p>
<script type="module">
  import { authHeaders, connect, createToken } from "/sdk/index.js";

  const params = new URLSearchParams(location.search);
  const status = document.getElementById("status");
  const messages = document.getElementById("messages");

  // Web Crypto in the page, for inputs the test also signs in Node.
  document.getElementById("token").textContent =
    await createToken("demo", "sécret ✓", "conn/ü 🐙", 1700000000000);
  document.getElementById("hmac").textContent =
    (await authHeaders(1, ${JSON.stringify(WORKED_EXAMPLE_SECRET)}, "/logout", 1472276742000)).HMAC;

  connect(params.get("relay"), async () => {
    const response = await fetch("/token?id=" + encodeURIComponent(params.get("id")));
    return (await response.json()).token;
  }, {
    onOpen() { status.textContent = "connected"; },
    onMessage(content) {
      const item = document.createElement("li");
      item.textContent = content;
      messages.append(item);
    },
    onReconnecting() { status.textContent = "reconnecting"; },
    onClose({ reason }) { status.textContent = reason; },
  });
</script>
</html>
`;

let daemon;
let server;
let serverUrl;
let context;
let userDataDir;
let tokensIssued = 0;
const pageErrors = [];

/** The page, the SDK's browser build, and a token endpoint like a backend's. */
function startServer() {
  server = createServer((request, response) => {
    const url = new URL(request.url, "http://localhost");
    const module = /^\/sdk\/([a-z]+\.js)$/.exec(url.pathname);
    if (url.pathname === "/") {
      response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      response.end(PAGE);
    } else if (module && existsSync(join(SOURCE, module[1]))) {
      response.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" });
      response.end(readFileSync(join(SOURCE, module[1])));
    } else if (url.pathname === "/token") {
      tokensIssued += 1;
      const token = createTokenSync(APP, SECRET, url.searchParams.get("id"));
      response.writeHead(200, { "Content-Type": "application/json" });
      response.end(JSON.stringify({ token }));
    } else if (url.pathname === "/favicon.ico") {
      response.writeHead(204).end();
    } else {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolveListen) =>
    server.listen(0, "127.0.0.1", () => {
      serverUrl = `http://127.0.0.1:${server.address().port}`;
      resolveListen();
    }),
  );
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium`);
  daemon = await startDaemon();
  await startServer();
  userDataDir = mkdtempSync(join(tmpdir(), "socktopus-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await context?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  await new Promise((resolveClose) => (server ? server.close(resolveClose) : resolveClose()));
  await daemon?.stop();
});

const SCENARIO = "a page connects with the SDK, shows a message sent by /send, and shows the kick";

test(SCENARIO, { timeout: 30_000 }, async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") pageErrors.push(message.text());
  });
  const relay = new RelayClient({ baseUrl: daemon.url, app: APP, secret: SECRET });
  const text = (selector) => page.locator(selector).textContent();
  const statusIs = (expected) =>
    page.waitForFunction((value) => document.getElementById("status").textContent === value, expected);

  await page.goto(`${serverUrl}/?relay=${encodeURIComponent(daemon.wsUrl)}&id=browser-1`);
  await statusIs("connected").catch(async (error) => {
    throw new Error(`${error.message}\npage: ${await page.content()}\nerrors: ${pageErrors}`);
  });

  // The page's Web Crypto signs exactly as Node does.
  assert.equal(await text("#token"), createTokenSync("demo", "sécret ✓", "conn/ü 🐙", 1700000000000));
  assert.equal(await text("#hmac"), "69aee4c4d9749a6e27c583af898840927975ea861b9d74dc54ef2e3cde14b7c4");

  const sent = await relay.send({ "browser-1": "hello from /send ✓ <b>not bold</b>" });
  assert.deepEqual(sent.failed, []);
  await page.locator("#messages li").first().waitFor();
  assert.deepEqual(await page.locator("#messages li").allTextContents(), [
    "hello from /send ✓ <b>not bold</b>",
  ]);

  assert.deepEqual(await relay.kick(["browser-1"]), { kicked: ["browser-1"], notConnected: [] });
  await statusIs("kicked");
  assert.equal(await text("#status"), "kicked");
  assert.equal(tokensIssued, 1);
  assert.deepEqual(pageErrors, []);
});
