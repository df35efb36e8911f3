import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { connect, createToken, RelayClient, SocktopusError } from "socktopus";

import { Channel } from "../test-support/channel.js";
import { APP, SECRET, startDaemon } from "../test-support/daemon.js";
import { startProxy } from "../test-support/proxy.js";

let daemon;
let relay;
before(async () => {
  daemon = await startDaemon();
  relay = new RelayClient({ baseUrl: `${daemon.url}/`, app: APP, secret: SECRET });
});
const handles = [];
after(async () => {
  // A failed test may leave a client retrying, which would keep node running.
  await Promise.all(handles.map((handle) => handle.close()));
  // SIGTERM: the daemon says CLOSE to anyone left and exits 0.
  assert.equal(await daemon.stop(), 0);
});

/**
 * Connect with the SDK; every handler call lands in `events` in order, and
 * `tokens` counts the calls to getToken.
 */
function open(connectionId, { url = daemon.wsUrl, getToken, ...options } = {}) {
  const events = new Channel();
  const counter = { tokens: 0 };
  const handle = connect(
    url,
    () => {
      counter.tokens += 1;
      return getToken ? getToken() : createToken(APP, SECRET, connectionId);
    },
    {
      onOpen: () => events.push("open"),
      onMessage: (content) => events.push(`message ${content}`),
      onClose: ({ reason }) => events.push(`close ${reason}`),
      onReconnecting: () => events.push("reconnecting"),
      onError: (error) => events.push(`error ${error.message}`),
      onPong: () => events.push("pong"),
    },
    { minDelay: 10, maxDelay: 50, ...options },
  );
  handles.push(handle);
  return { handle, events, counter };
}

describe("RelayClient and connect", { timeout: 10_000 }, () => {
  test("send delivers arrays, {recipient: content} objects and Maps, in order", async () => {
    const { handle, events } = open("send-1");
    assert.equal(await events.next(), "open");
    assert.equal(handle.connected, true);

    const sent = await relay.send([
      { recipient: "send-1", content: "first" },
      { recipient: "nobody", content: "lost" },
      { recipient: "send-1", content: "DATA:second ✓ 🐙" },
    ]);
    assert.deepEqual(sent, {
      succeeded: [
        { recipient: "send-1", content: "first" },
        { recipient: "send-1", content: "DATA:second ✓ 🐙" },
      ],
      failed: [{ recipient: "nobody", content: "lost" }],
    });
    assert.deepEqual(await relay.send({ "send-1": "third" }), {
      succeeded: [{ recipient: "send-1", content: "third" }],
      failed: [],
    });
    await relay.send(new Map([["send-1", "fourth"]]));

    assert.equal(await events.next(), "message first");
    assert.equal(await events.next(), "message DATA:second ✓ 🐙");
    assert.equal(await events.next(), "message third");
    assert.equal(await events.next(), "message fourth");
    await handle.close();
    assert.equal(await events.next(), "close closed");
    assert.equal(handle.connected, false);
  });

  test("a kick closes the client for good: onClose says kicked, no new token is asked for", async () => {
    const { handle, events, counter } = open("kick-1");
    assert.equal(await events.next(), "open");
    assert.deepEqual(await relay.kick(["kick-1", "nobody"]), {
      kicked: ["kick-1"],
      notConnected: ["nobody"],
    });
    assert.equal(await events.next(), "close kicked");
    assert.deepEqual(await handle.closed, { reason: "kicked", code: 1000 });
    // Finished: no retry is pending, so none can come later.
    assert.equal(counter.tokens, 1);
    assert.deepEqual(events.pending, []);
    assert.deepEqual(await relay.send({ "kick-1": "after the kick" }), {
      succeeded: [],
      failed: [{ recipient: "kick-1", content: "after the kick" }],
    });
    assert.deepEqual(await relay.kick("kick-1"), { kicked: [], notConnected: ["kick-1"] });
  });

  test("a newer connection with the same id replaces the old one, which stops", async () => {
    const first = open("twin");
    assert.equal(await first.events.next(), "open");
    const second = open("twin");
    assert.equal(await second.events.next(), "open");
    assert.equal(await first.events.next(), "close kicked");
    await relay.send({ twin: "to the newer one" });
    assert.equal(await second.events.next(), "message to the newer one");
    assert.equal(first.counter.tokens, 1);
    await second.handle.close();
  });

  test("after the network drops the socket it reconnects with a fresh token", async () => {
    const proxy = await startProxy(daemon.port);
    try {
      const tokens = [];
      const { handle, events, counter } = open("drop-1", {
        url: proxy.url,
        getToken: async () => {
          tokens.push(await createToken(APP, SECRET, "drop-1"));
          return tokens.at(-1);
        },
      });
      assert.equal(await events.next(), "open");
      assert.equal(proxy.cut(), 1);
      assert.equal(await events.next(), "reconnecting");
      assert.equal(await events.next(), "open");
      assert.equal(counter.tokens, 2);
      assert.equal(proxy.accepted, 2);
      assert.notEqual(tokens[0], tokens[1]);
      // The daemon may still hold the dropped socket: the new one replaced it.
      const sent = await relay.send({ "drop-1": "after the drop" });
      assert.equal(sent.succeeded.length, 1);
      assert.equal(await events.next(), "message after the drop");
      await handle.close();
      assert.equal(await events.next(), "close closed");
    } finally {
      await proxy.close();
    }
  });

  test("keeps trying with backoff while tokens are refused, and gives up after maxAttempts", async () => {
    const { handle, events, counter } = open("refused-1", {
      getToken: () => createToken(APP, "not-the-secret", "refused-1"),
      maxAttempts: 3,
    });
    assert.equal(await events.next(), "reconnecting");
    assert.equal(await events.next(), "reconnecting");
    assert.equal(await events.next(), "close failed");
    assert.equal(counter.tokens, 3);
    assert.equal((await handle.closed).reason, "failed");
  });

  test("a getToken that throws is reported and tried again", async () => {
    let calls = 0;
    const { handle, events } = open("flaky-1", {
      getToken: () => {
        calls += 1;
        if (calls === 1) throw new Error("backend unavailable");
        return createToken(APP, SECRET, "flaky-1");
      },
    });
    assert.equal(await events.next(), "error backend unavailable");
    assert.equal(await events.next(), "reconnecting");
    assert.equal(await events.next(), "open");
    await handle.close();
  });

  test("sends PING on its interval and the daemon answers PONG", async () => {
    const { handle, events } = open("ping-1", { pingInterval: 20 });
    assert.equal(await events.next(), "open");
    assert.equal(await events.next(), "pong");
    assert.equal(await events.next(), "pong");
    await handle.close();
  });

  test("close() while the first token is still coming never connects", async () => {
    let release;
    const { handle, events, counter } = open("early-1", {
      getToken: () => new Promise((resolve) => (release = resolve)),
    });
    assert.deepEqual(await handle.close(), { reason: "closed", code: undefined });
    release(await createToken(APP, SECRET, "early-1"));
    assert.equal(await events.next(), "close closed");
    assert.equal(counter.tokens, 1);
    assert.deepEqual(events.pending, []);
  });
});

describe("errors", { timeout: 10_000 }, () => {
  test("a wrong secret is a SocktopusError with status 401", async () => {
    const wrong = new RelayClient({ baseUrl: daemon.url, app: APP, secret: "not-the-secret" });
    const error = await wrong.send({ someone: "hi" }).catch((e) => e);
    assert.ok(error instanceof SocktopusError);
    assert.ok(error instanceof Error);
    assert.equal(error.name, "SocktopusError");
    assert.equal(error.status, 401);
    assert.equal(error.message, "Invalid secret");
    assert.deepEqual(error.body, { code: 401, message: "Invalid secret" });
    await assert.rejects(wrong.kick(["someone"]), { name: "SocktopusError", status: 401 });
  });

  test("an unknown app is 404 and a malformed message 400", async () => {
    const unknown = new RelayClient({ baseUrl: daemon.url, app: "nosuchapp", secret: SECRET });
    await assert.rejects(unknown.send([]), { status: 404, message: "Secret not found" });
    await assert.rejects(relay.send([{ recipient: "x", content: 5 }]), {
      status: 400,
      message: "Malformed request",
    });
  });

  test("a non-JSON error page (a proxy's 502) is still a SocktopusError", async () => {
    const behindProxy = new RelayClient({
      baseUrl: "https://relay.invalid",
      app: APP,
      secret: SECRET,
      fetch: async () => new Response("<h1>Bad Gateway</h1>", { status: 502, statusText: "Bad Gateway" }),
    });
    await assert.rejects(behindProxy.send({ a: "b" }), { status: 502, message: "Bad Gateway" });
  });

  test("the secret does not show when the client is logged", async () => {
    const { inspect } = await import("node:util");
    assert.ok(!inspect(relay).includes(SECRET));
    assert.ok(!JSON.stringify(relay).includes(SECRET));
  });
});
