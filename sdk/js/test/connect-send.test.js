import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { connect } from "socktopus";

import { Channel } from "../test-support/channel.js";

/**
 * A WebSocket the test opens and closes by hand, recording what is sent.
 */
function fakeWebSocket(sockets) {
  return class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    send(data) {
      if (this.readyState !== 1) throw new Error(`send() in state ${this.readyState}`);
      this.sent.push(data);
    }

    close(code = 1000) {
      if (this.readyState >= 2) return;
      this.readyState = 2;
      queueMicrotask(() => {
        this.readyState = 3;
        this.onclose?.({ code });
      });
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code });
    }
  };
}

function open() {
  const sockets = [];
  const events = new Channel();
  const handle = connect(
    "ws://relay.invalid",
    () => "token",
    {
      onOpen: () => events.push("open"),
      onReconnecting: () => events.push("reconnecting"),
      onClose: ({ reason }) => events.push(`close ${reason}`),
    },
    { WebSocket: fakeWebSocket(sockets), minDelay: 1, maxDelay: 2, pingInterval: 60_000 },
  );
  return { handle, events, sockets };
}

/** Until getToken() has resolved and a socket was made. */
async function socketOf(sockets, index = 0) {
  while (sockets.length <= index) await new Promise((resolve) => setTimeout(resolve, 1));
  return sockets[index];
}

describe("connect().send", () => {
  test("sends DATA:<content> on the open socket, in order", async () => {
    const { handle, events, sockets } = open();
    const socket = await socketOf(sockets);
    socket.open();
    assert.equal(await events.next(), "open");
    assert.equal(handle.send("hello"), true);
    assert.equal(handle.send(""), true);
    assert.equal(handle.send("DATA:x ✓ 🐙\n"), true);
    assert.deepEqual(socket.sent, ["DATA:hello", "DATA:", "DATA:DATA:x ✓ 🐙\n"]);
    await handle.close();
  });

  test("is false, sending and queueing nothing, while not connected", async () => {
    const { handle, events, sockets } = open();
    assert.equal(handle.send("before any socket"), false);
    const first = await socketOf(sockets);
    assert.equal(handle.send("while connecting"), false);
    first.open();
    assert.equal(await events.next(), "open");
    first.drop();
    assert.equal(await events.next(), "reconnecting");
    assert.equal(handle.send("between connections"), false);
    const second = await socketOf(sockets, 1);
    second.open();
    assert.equal(await events.next(), "open");
    assert.equal(handle.send("again"), true);
    assert.deepEqual(first.sent, []);
    assert.deepEqual(second.sent, ["DATA:again"]);
    const closing = handle.close();
    assert.equal(handle.send("while closing"), false);
    await closing;
    assert.equal(handle.send("after close"), false);
    assert.deepEqual(second.sent, ["DATA:again"]);
  });

  test("content must be a string", async () => {
    const { handle, events, sockets } = open();
    (await socketOf(sockets)).open();
    assert.equal(await events.next(), "open");
    for (const content of [undefined, null, 1, { a: 1 }, new Uint8Array(1)]) {
      assert.throws(() => handle.send(content), TypeError);
    }
    assert.deepEqual(sockets[0].sent, []);
    await handle.close();
  });
});
