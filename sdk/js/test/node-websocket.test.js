/**
 * Which WebSocket connect() uses in Node: the global one when Node has it,
 * else the `ws` package, else a TypeError saying what to install; and
 * options.WebSocket over all of them.
 *
 * The suite runs under --experimental-websocket (for Node 20's global), and
 * a flag cannot be taken away from a running process, so the cases without
 * the global run test-support/node-client.js in a child node started with
 * --no-experimental-websocket: Node 20 as it is by default, and Node 22+
 * with its global turned off.
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";

import { connect, createToken, RelayClient } from "socktopus";

import { Channel } from "../test-support/channel.js";
import { APP, SECRET, startDaemon } from "../test-support/daemon.js";

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CLIENT = join("test-support", "node-client.js");

let daemon;
let relay;
const children = [];
before(async () => {
  daemon = await startDaemon();
  relay = new RelayClient({ baseUrl: daemon.url, app: APP, secret: SECRET });
});
after(async () => {
  // A failed test may leave a client connected, which would keep it running.
  for (const child of children) child.kill("SIGKILL");
  assert.equal(await daemon.stop(), 0);
});

/**
 * Run node-client.js from `packageRoot` in a child node with `flag`; its
 * lines land in `lines`, and `exited` resolves with its exit code.
 */
function runClient(flag, connectionId, packageRoot = PACKAGE) {
  const child = spawn(process.execPath, [flag, CLIENT, daemon.wsUrl, APP, SECRET, connectionId], {
    cwd: packageRoot,
    // No NODE_OPTIONS (it could carry the flag back in) and no NODE_PATH
    // (it could make ws resolvable where it must not be).
    env: { PATH: process.env.PATH, HOME: packageRoot },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const lines = new Channel();
  createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
  let errors = "";
  child.stderr.on("data", (chunk) => {
    errors += chunk;
  });
  const exited = new Promise((resolveExit) => {
    child.on("exit", (code, signal) => resolveExit(code ?? signal));
  });
  return {
    lines,
    exited,
    get errors() {
      return errors;
    },
  };
}

describe("connect() in Node picks its WebSocket", { timeout: 20_000 }, () => {
  test("without a global WebSocket (Node 20, no flag) it connects through the ws package", async () => {
    const client = runClient("--no-experimental-websocket", "ws-1");
    assert.equal(await client.lines.next(), "global undefined", client.errors);
    assert.equal(await client.lines.next(), "open", client.errors);

    assert.deepEqual((await relay.send({ "ws-1": "hello through ws ✓" })).failed, []);
    assert.equal(await client.lines.next(), "message hello through ws ✓");
    await relay.kick(["ws-1"]);
    assert.equal(await client.lines.next(), "close kicked");
    // Nothing else keeps it alive: it exits by itself, and cleanly.
    assert.equal(await client.exited, 0, client.errors);
    assert.deepEqual(client.lines.pending, []);
  });

  test("with a global WebSocket it uses that one, not ws", async () => {
    const client = runClient("--experimental-websocket", "global-1");
    assert.equal(await client.lines.next(), "global function", client.errors);
    assert.equal(await client.lines.next(), "constructed global");
    assert.equal(await client.lines.next(), "open", client.errors);
    await relay.kick(["global-1"]);
    assert.equal(await client.lines.next(), "close kicked");
    assert.equal(await client.exited, 0, client.errors);
  });

  test("with neither it throws a TypeError that says to install ws or use a newer Node", async () => {
    // The package as installed without ws: its files alone, where no
    // node_modules above them has ws.
    const installed = mkdtempSync(join(tmpdir(), "socktopus-without-ws-"));
    try {
      for (const path of ["package.json", "src", CLIENT]) {
        cpSync(join(PACKAGE, path), join(installed, path), { recursive: true });
      }
      const client = runClient("--no-experimental-websocket", "none-1", installed);
      assert.equal(await client.lines.next(), "global undefined", client.errors);
      const line = await client.lines.next();
      assert.match(line, /^error Node v\d+\.\d+\.\d+ has no WebSocket: /);
      assert.ok(
        line.includes("install the ws package (npm install ws) or use Node 22+ / --experimental-websocket"),
        line,
      );
      assert.equal(await client.exited, 1, client.errors);
    } finally {
      rmSync(installed, { recursive: true, force: true });
    }
  });

  test("options.WebSocket is used as given, over the global one", async () => {
    const made = [];
    class CountingWebSocket extends WebSocket {
      constructor(url) {
        super(url);
        made.push(new URL(url).pathname);
      }
    }
    const events = new Channel();
    const handle = connect(
      daemon.wsUrl,
      () => createToken(APP, SECRET, "given-1"),
      {
        onOpen: () => events.push("open"),
        onMessage: (content) => events.push(`message ${content}`),
        onClose: ({ reason }) => events.push(`close ${reason}`),
      },
      { WebSocket: CountingWebSocket },
    );
    try {
      assert.equal(await events.next(), "open");
      assert.deepEqual(made, ["/recieve"]);
      await relay.send({ "given-1": "through the given one" });
      assert.equal(await events.next(), "message through the given one");
    } finally {
      await handle.close();
    }
    assert.equal(await events.next(), "close closed");
  });
});
