/**
 * A Node program that uses the SDK as an application would: `connect()`
 * with no WebSocket option, so the SDK picks the implementation itself.
 * test/node-websocket.test.js runs it in a child node, with and without
 * --experimental-websocket, because a flag cannot be taken away from the
 * test runner's own process.
 *
 *   node node-client.js WS_URL APP SECRET CONNECTION_ID
 *
 * Prints one line per event: `global <typeof globalThis.WebSocket>` first,
 * then `constructed global` each time the global WebSocket is used, `open`,
 * `message <content>`, `close <reason>`; `error <message>` if connect()
 * throws (and exits 1). It exits by itself once the connection is over.
 */

import { connect, createTokenSync } from "socktopus";

const [wsUrl, app, secret, connectionId] = process.argv.slice(2);

console.log(`global ${typeof globalThis.WebSocket}`);
if (typeof globalThis.WebSocket === "function") {
  // Tell the parent whether connect() took the global (it must, when there is one).
  globalThis.WebSocket = class extends globalThis.WebSocket {
    constructor(...args) {
      super(...args);
      console.log("constructed global");
    }
  };
}

try {
  connect(wsUrl, () => createTokenSync(app, secret, connectionId), {
    onOpen: () => console.log("open"),
    onMessage: (content) => console.log(`message ${content}`),
    onClose: ({ reason }) => console.log(`close ${reason}`),
  });
} catch (error) {
  console.log(`error ${error.message}`);
  process.exitCode = 1;
}
