/**
 * A TCP proxy in front of the daemon whose connections the test can cut:
 * the network dropping a client, as the client sees it (no CLOSE, no close
 * frame), without stopping the daemon.
 */

import net from "node:net";

export async function startProxy(targetPort) {
  const pairs = new Set();
  let accepted = 0;
  const server = net.createServer((downstream) => {
    accepted += 1;
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { downstream, upstream };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    url: `ws://127.0.0.1:${server.address().port}`,
    /** How many connections it has taken so far. */
    get accepted() {
      return accepted;
    },
    /** Destroy every connection passing through; returns how many there were. */
    cut() {
      const count = pairs.size;
      for (const { downstream, upstream } of [...pairs]) {
        downstream.destroy();
        upstream.destroy();
      }
      return count;
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
