import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { connect, createToken, RelayClient } from "socktopus";

import { Channel } from "../test-support/channel.js";
import { APP, SECRET, startDaemon } from "../test-support/daemon.js";

let daemon;
let relay;
const handles = [];
before(async () => {
  daemon = await startDaemon();
  relay = new RelayClient({ baseUrl: daemon.url, app: APP, secret: SECRET });
});
after(async () => {
  await Promise.all(handles.map((handle) => handle.close()));
  assert.equal(await daemon.stop(), 0);
});

/** A connected client of the SDK, once the daemon has it. */
async function online(connectionId) {
  const events = new Channel();
  const handle = connect(daemon.wsUrl, () => createToken(APP, SECRET, connectionId), {
    onOpen: () => events.push("open"),
    onClose: ({ reason }) => events.push(`close ${reason}`),
  });
  handles.push(handle);
  assert.equal(await events.next(), "open");
  return { handle, events };
}

describe("RelayClient.presence", { timeout: 10_000 }, () => {
  test("says which ids are connected, in the order asked, duplicates kept", async () => {
    await online("p-alice");
    await online("p-bob");
    assert.deepEqual(await relay.presence(["p-bob", "p-ghost", "p-alice", "p-bob"]), {
      connected: ["p-bob", "p-alice", "p-bob"],
      notConnected: ["p-ghost"],
    });
    assert.deepEqual(await relay.presence("p-alice"), { connected: ["p-alice"], notConnected: [] });
    assert.deepEqual(await relay.presence(new Set(["p-ghost"])), {
      connected: [],
      notConnected: ["p-ghost"],
    });
    assert.deepEqual(await relay.presence([]), { connected: [], notConnected: [] });
  });

  test("without ids lists every connected id of the app and counts them", async () => {
    const { handle, events } = await online("p-carol");
    const everyone = await relay.presence();
    assert.deepEqual(Object.keys(everyone).sort(), ["connected", "count"]);
    assert.ok(everyone.connected.includes("p-carol"));
    assert.equal(everyone.count, everyone.connected.length);
    assert.deepEqual(await relay.presence(null), everyone);
    await handle.close();
    assert.equal(await events.next(), "close closed");
    // The daemon may take a moment to see the close.
    let after;
    for (let i = 0; i < 100; i += 1) {
      after = await relay.presence();
      if (!after.connected.includes("p-carol")) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(!after.connected.includes("p-carol"));
    assert.equal(after.count, everyone.count - 1);
  });

  test("refusals are SocktopusErrors", async () => {
    const wrong = new RelayClient({ baseUrl: daemon.url, app: APP, secret: "not-the-secret" });
    await assert.rejects(wrong.presence(), { status: 401, message: "Invalid secret" });
    const unknown = new RelayClient({ baseUrl: daemon.url, app: "nosuchapp", secret: SECRET });
    await assert.rejects(unknown.presence(["x"]), { status: 404, message: "Secret not found" });
    await assert.rejects(relay.presence([1]), { status: 400, message: "Malformed request" });
  });
});
