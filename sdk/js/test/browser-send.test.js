/**
 * connect().send in a real browser, to a real webhook: the daemon is started
 * with DEMO_SOCKTOPUS_WEBHOOK pointing at this test's own HTTP server, which
 * also serves the page and the SDK's browser build (src/ as it is). The page,
 * in Debian's Chromium (headless, driven by playwright-core), connects and
 * sends one message; the server's /hook checks every POST's signature with
 * the SDK on the raw body and hands the events to the test, which waits on
 * them (with timeouts, never a fixed sleep): connect, the message, and the
 * disconnect once the page has closed its connection (SPEC §7.2-7.3).
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { createTokenSync, verifyWebhook, verifyWebhookSync } from "socktopus";

import { Channel } from "../test-support/channel.js";
import { APP, SECRET, startDaemon } from "../test-support/daemon.js";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), "../src");
const CONNECTION_ID = "browser-send-1";
const CONTENT = "hello from the browser ✓";
/** How long any one awaited thing may take; batches go out within 100 ms. */
const WAIT = 10_000;

const PAGE = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Socktopus: a browser sends to the webhook</title>
<p>Status: <span id="status">loading</span></p>
<p>Sent: <span id="sent"></span></p>
<script type="module">
  import { connect } from "/sdk/index.js";

  const params = new URLSearchParams(location.search);
  const status = document.getElementById("status");
  let sentOnce = false;

  const connection = connect(params.get("relay"), async () => {
    const response = await fetch("/token?id=" + encodeURIComponent(params.get("id")));
    return (await response.json()).token;
  }, {
    onOpen() {
      status.textContent = "connected";
      if (!sentOnce) {
        sentOnce = true;
        document.getElementById("sent").textContent = String(connection.send(params.get("content")));
      }
    },
    onReconnecting() { status.textContent = "reconnecting"; },
    onClose({ reason }) { status.textContent = reason; },
  });
  // For the test, to close it as a page's own code would.
  window.socktopusConnection = connection;
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
/** Every event of every well-signed POST to /hook, in the order received. */
const events = new Channel();
/** What was wrong with a POST to /hook: a bad signature, a wrong app, ... */
const hookProblems = [];
let hookRequests = 0;

/** Resolve as `promise` does, or reject after `ms` saying what was awaited. */
function within(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `timed out after ${ms} ms waiting for ${what}\n` +
              `hook problems: ${JSON.stringify(hookProblems)}\n` +
              `unclaimed events: ${JSON.stringify(events.pending)}\n` +
              `page errors: ${JSON.stringify(pageErrors)}\n` +
              `daemon output:\n${daemon?.output}`,
          ),
        ),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function nextEvent(what) {
  return within(events.next(), what);
}

/** Read the raw body: what the daemon signed, before any parsing. */
function rawBody(request) {
  return new Promise((resolveBody, reject) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => resolveBody(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

/** A backend's webhook endpoint, as README.md's "Receive webhooks" has it. */
async function hook(request, response) {
  hookRequests += 1;
  const body = await rawBody(request);
  const signature = request.headers["socktopus-signature"];
  if (request.method !== "POST") {
    hookProblems.push(`a ${request.method} to /hook`);
    response.writeHead(405).end();
    return;
  }
  const good = verifyWebhookSync(body, signature, SECRET);
  const goodAsync = await verifyWebhook(body, signature, SECRET);
  if (!good || !goodAsync) {
    hookProblems.push(`bad signature (sync ${good}, async ${goodAsync}): ${signature} on ${body}`);
    response.writeHead(401).end("bad signature");
    return;
  }
  // Not vacuous: the same header does not sign another body, nor with another secret.
  const tampered = Buffer.concat([body, Buffer.from(" ")]);
  if (verifyWebhookSync(tampered, signature, SECRET) || verifyWebhookSync(body, signature, "x")) {
    hookProblems.push(`a signature that verifies what it does not sign: ${signature}`);
  }
  let batch;
  try {
    batch = JSON.parse(body.toString("utf8"));
  } catch (error) {
    hookProblems.push(`not JSON (${error.message}): ${body}`);
    response.writeHead(400).end();
    return;
  }
  if (batch.app !== APP) hookProblems.push(`a batch for app ${JSON.stringify(batch.app)}`);
  if (!Array.isArray(batch.events)) {
    hookProblems.push(`a batch without events: ${body}`);
  } else {
    for (const event of batch.events) events.push(event);
  }
  response.writeHead(204).end();
}

/** The page, the SDK's browser build, a token endpoint and the webhook. */
function startServer() {
  server = createServer((request, response) => {
    const url = new URL(request.url, "http://localhost");
    const module = /^\/sdk\/([a-z]+\.js)$/.exec(url.pathname);
    if (url.pathname === "/hook") {
      hook(request, response).catch((error) => {
        hookProblems.push(`the hook failed: ${error.stack}`);
        if (!response.headersSent) response.writeHead(500);
        response.end();
      });
    } else if (url.pathname === "/") {
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
  return new Promise((resolveListen, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      serverUrl = `http://127.0.0.1:${server.address().port}`;
      resolveListen();
    });
  });
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium`);
  // Listening first: the daemon is told the webhook's port when it starts.
  await startServer();
  daemon = await startDaemon({
    env: { [`${APP.toUpperCase()}_SOCKTOPUS_WEBHOOK`]: `${serverUrl}/hook` },
  });
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
  await daemon?.stop();
  // After the daemon: it may still be posting its last batch.
  server?.closeAllConnections?.();
  await new Promise((resolveClose) => (server ? server.close(resolveClose) : resolveClose()));
});

const SCENARIO =
  "a page's connection.send reaches the webhook as a signed message event, between connect and disconnect";

test(SCENARIO, { timeout: 45_000 }, async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") pageErrors.push(message.text());
  });
  const text = (selector) => page.locator(selector).textContent();
  const statusIs = (expected) =>
    page.waitForFunction((value) => document.getElementById("status").textContent === value, expected);
  const startedAt = Date.now();

  const query = new URLSearchParams({ relay: daemon.wsUrl, id: CONNECTION_ID, content: CONTENT });
  await page.goto(`${serverUrl}/?${query}`);
  await statusIs("connected").catch(async (error) => {
    throw new Error(`${error.message}\npage: ${await page.content()}\nerrors: ${pageErrors}`);
  });

  const connected = await nextEvent("the connect event");
  assert.equal(connected.type, "connect", JSON.stringify(connected));
  assert.equal(connected.connection, CONNECTION_ID);
  assert.ok(
    Number.isSafeInteger(connected.time) && connected.time >= startedAt - 1000,
    `connect at ${connected.time}, test started at ${startedAt}`,
  );

  const message = await nextEvent("the message event");
  assert.deepEqual(message, {
    type: "message",
    connection: CONNECTION_ID,
    time: message.time,
    content: CONTENT,
  });
  assert.ok(message.time >= connected.time, `message at ${message.time}, connect at ${connected.time}`);
  // The page's send found the socket open.
  assert.equal(await text("#sent"), "true");

  // The page closes its connection, as its own code would.
  const closedWith = await page.evaluate(() => window.socktopusConnection.close());
  assert.deepEqual(closedWith, { reason: "closed", code: 1000 });
  await statusIs("closed");

  const disconnected = await nextEvent("the disconnect event");
  assert.deepEqual(disconnected, {
    type: "disconnect",
    connection: CONNECTION_ID,
    time: disconnected.time,
    reason: "client",
  });
  assert.ok(
    disconnected.time >= message.time,
    `disconnect at ${disconnected.time}, message at ${message.time}`,
  );

  assert.deepEqual(events.pending, []);
  assert.deepEqual(hookProblems, []);
  assert.ok(hookRequests >= 1);
  assert.equal(tokensIssued, 1);
  assert.deepEqual(pageErrors, []);
});
