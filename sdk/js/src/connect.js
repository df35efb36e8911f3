/**
 * The client's side of the relay: one WebSocket to `/recieve`, kept alive
 * with PING and reopened with a fresh token when the network drops it.
 */

const DEFAULTS = {
  path: "/recieve",
  pingInterval: 10_000,
  minDelay: 500,
  maxDelay: 30_000,
  maxAttempts: Infinity,
};

function receiveUrl(url, path) {
  const base = new URL(url, globalThis.location?.href);
  if (base.protocol === "http:") base.protocol = "ws:";
  else if (base.protocol === "https:") base.protocol = "wss:";
  else if (base.protocol !== "ws:" && base.protocol !== "wss:") {
    throw new TypeError(`url must be ws://, wss://, http:// or https://, not ${base.protocol}`);
  }
  base.search = "";
  base.hash = "";
  return base.href.replace(/\/+$/, "") + path;
}

/**
 * Connect to the relay at `url` (the daemon's base URL, e.g.
 * `wss://relay.example.com`) and stay connected.
 *
 * `getToken()` returns a token (or a Promise of one) from your backend; it is
 * called again before every reconnection, because tokens live 5 seconds.
 *
 * Handlers, all optional:
 * - `onOpen()`: the connection is up (again);
 * - `onMessage(content)`: the content of each `DATA:` frame, in order;
 * - `onClose({reason, code})`: final, nothing follows. `reason` is `"kicked"`
 *   when the daemon said CLOSE (a kick, a newer connection with the same id,
 *   or the daemon shutting down), `"closed"` after `close()`, `"failed"` when
 *   `maxAttempts` connections in a row failed;
 * - `onReconnecting({attempt, delay, code, error})`: the connection dropped or
 *   could not open (`code`), or `getToken()` failed (`error`), and the next
 *   try starts in `delay` ms;
 * - `onError(error)`: `getToken()` failed or a handler threw (a handler's
 *   error is thrown uncaught when there is no onError);
 * - `onPong()`: the daemon answered a PING.
 *
 * Options: `WebSocket` (the implementation; default the global one, which
 * Node has from v22, or v20 with --experimental-websocket; the `ws` package
 * fits too, and the Node entry, node.js, takes it by itself when Node has no
 * global one), `pingInterval` (10000 ms), `minDelay` (500 ms) and `maxDelay`
 * (30000 ms) for the exponential backoff with jitter, `maxAttempts`
 * (unlimited), `path` ("/recieve").
 *
 * Returns a handle: `close()` (resolves once closed), `closed` (a Promise of
 * what onClose gets), `connected`, and `send(content)`, which sends
 * `DATA:<content>` to the app's backend (its webhook, SPEC §7.3) and says
 * whether it could: false, with nothing sent or queued, while not connected.
 */
export function connect(url, getToken, handlers = {}, options = {}) {
  const settings = { ...DEFAULTS, ...options };
  const WebSocketImpl = settings.WebSocket ?? globalThis.WebSocket;
  if (typeof WebSocketImpl !== "function") {
    throw new TypeError(
      "No WebSocket here: pass options.WebSocket (e.g. from the ws package), " +
        "or run Node 20 with --experimental-websocket",
    );
  }
  if (typeof getToken !== "function") {
    throw new TypeError("getToken must be a function returning a token");
  }
  const endpoint = receiveUrl(url, settings.path);

  let socket = null;
  let pinger = null;
  let retry = null;
  let failures = 0;
  let finished = false;
  let resolveClosed;
  const closed = new Promise((resolve) => {
    resolveClosed = resolve;
  });

  function report(error) {
    if (handlers.onError) {
      try {
        handlers.onError(error);
        return;
      } catch (inHandler) {
        error = inHandler;
      }
    }
    // Nobody listens: surface it as an uncaught error, outside our state changes.
    setTimeout(() => {
      throw error;
    });
  }

  function call(name, ...args) {
    try {
      handlers[name]?.(...args);
    } catch (error) {
      report(error);
    }
  }

  function stop() {
    finished = true;
    clearInterval(pinger);
    clearTimeout(retry);
  }

  let settled = false;
  function settle(reason, code) {
    if (settled) return;
    settled = true;
    const event = { reason, code };
    call("onClose", event);
    resolveClosed(event);
  }

  function finish(reason, code) {
    stop();
    settle(reason, code);
  }

  function scheduleRetry(code, error) {
    failures += 1;
    if (failures >= settings.maxAttempts) {
      finish("failed", code);
      return;
    }
    // Exponential backoff, capped, with half of it random so that clients
    // dropped together (a restart, a network blip) do not return together.
    const ceiling = Math.min(settings.maxDelay, settings.minDelay * 2 ** (failures - 1));
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    const event =
      error === undefined ? { attempt: failures, delay, code } : { attempt: failures, delay, error };
    call("onReconnecting", event);
    if (!finished) retry = setTimeout(open, delay);
  }

  async function open() {
    retry = null;
    let token;
    try {
      token = await getToken();
    } catch (error) {
      // A backend that is briefly down is no bug: tell onError, if anyone
      // listens, and try again later, as for a dropped connection.
      if (handlers.onError) call("onError", error);
      if (!finished) scheduleRetry(undefined, error);
      return;
    }
    if (finished) return;
    let ws;
    try {
      ws = new WebSocketImpl(`${endpoint}?token=${encodeURIComponent(token)}`);
    } catch (error) {
      report(error);
      scheduleRetry(undefined);
      return;
    }
    socket = ws;
    let toldToClose = false;
    let ended = false;

    function end(code) {
      if (ended) return;
      ended = true;
      clearInterval(pinger);
      pinger = null;
      socket = null;
      if (finished) {
        settle("closed", code);
      } else if (toldToClose) {
        // CLOSE is the daemon's final word: a kicked client that came back
        // would only be refused, and a replaced one would replace its successor.
        finish("kicked", code);
      } else {
        scheduleRetry(code);
      }
    }

    ws.onopen = () => {
      failures = 0;
      pinger = setInterval(() => {
        if (ws.readyState === 1) ws.send("PING");
      }, settings.pingInterval);
      call("onOpen");
    };
    ws.onmessage = (event) => {
      const text = event.data;
      if (typeof text !== "string") return;
      if (text.startsWith("DATA:")) call("onMessage", text.slice(5));
      else if (text === "PONG") call("onPong");
      else if (text === "CLOSE") toldToClose = true;
    };
    ws.onclose = (event) => end(event.code);
    ws.onerror = () => {
      // Browsers follow an error with close, which decides what is next. Node
      // 20's WebSocket does not when the upgrade is refused (a 401 for an
      // expired token): it stays CONNECTING, so end that attempt here.
      if (ws.readyState === 0 && !ended) {
        end(1006);
        // Let go of it; its close() may fire error again, synchronously.
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close();
        } catch {
          // Already failing; nothing to close.
        }
      }
    };
  }

  open();

  return {
    closed,
    get connected() {
      return socket !== null && socket.readyState === 1;
    },
    send(content) {
      if (typeof content !== "string") throw new TypeError("content must be a string");
      // Not queued while there is no open socket: after a reconnection the
      // backend may no longer want it, and only the caller knows.
      if (socket === null || socket.readyState !== 1) return false;
      socket.send(`DATA:${content}`);
      return true;
    },
    close() {
      if (!finished) {
        stop();
        // onClose follows once the socket has closed, or at once without one.
        if (socket && socket.readyState <= 1) socket.close(1000);
        else settle("closed", undefined);
      }
      return closed;
    },
  };
}
