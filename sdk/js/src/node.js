/**
 * Socktopus for Node: everything the browser build has, plus synchronous
 * token, Auth Headers and webhook functions on node:crypto, and a connect() that
 * falls back on the `ws` package where Node has no WebSocket of its own
 * (Node 20 without --experimental-websocket).
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { createRequire } from "node:module";

import { connect as connectWith } from "./connect.js";
import { headersRecipe, tokenRecipe, webhookRecipe } from "./signing.js";

// This module's own connect shadows the one index.js exports.
export * from "./index.js";

const require = createRequire(import.meta.url);

/**
 * The `ws` package's WebSocket, or undefined when it is not installed.
 *
 * require, not import(): connect() returns its handle and throws at once,
 * and an import() would make it wait. It is only loaded when needed, so
 * `ws` stays an optional peer dependency.
 */
function wsPackage() {
  try {
    require.resolve("ws");
  } catch (error) {
    if (error?.code === "MODULE_NOT_FOUND") return undefined;
    throw error;
  }
  // Installed but broken is an error worth seeing, not "not installed".
  return require("ws");
}

/**
 * As connect in the browser build; without `options.WebSocket` it takes
 * Node's global WebSocket (Node 22+, or 20 with --experimental-websocket),
 * else the `ws` package, else throws a TypeError saying what to do.
 */
export function connect(url, getToken, handlers = {}, options = {}) {
  let WebSocket = options?.WebSocket ?? globalThis.WebSocket;
  if (typeof WebSocket !== "function") WebSocket = wsPackage();
  if (typeof WebSocket !== "function") {
    throw new TypeError(
      `Node ${process.version} has no WebSocket: install the ws package (npm install ws) ` +
        "or use Node 22+ / --experimental-websocket, or pass options.WebSocket",
    );
  }
  return connectWith(url, getToken, handlers, { ...options, WebSocket });
}

function hmacSha256(key, message) {
  return createHmac("sha256", Buffer.from(key, "utf8")).update(message, "utf8").digest();
}

/** As createToken, without the Promise. */
export function createTokenSync(app, secret, connectionId, now) {
  const recipe = tokenRecipe(app, secret, connectionId, now);
  return recipe.finish(hmacSha256(recipe.key, recipe.message));
}

/** As authHeaders, without the Promise. */
export function authHeadersSync(userId, secret, path, now, encoding = "hex") {
  const recipe = headersRecipe(userId, secret, path, now, encoding);
  return recipe.finish(hmacSha256(recipe.key, recipe.message));
}

/** As verifyWebhook, without the Promise. */
export function verifyWebhookSync(body, header, secret, now) {
  const recipe = webhookRecipe(body, header, secret, now);
  if (recipe === null) return false;
  const expected = createHmac("sha256", Buffer.from(recipe.key, "utf8"))
    .update(recipe.message)
    .digest();
  let matched = false;
  for (const mac of recipe.macs) {
    // Constant time, and every v1 compared: the time taken says nothing of a forgery.
    if (timingSafeEqual(mac, expected)) matched = true;
  }
  return matched;
}
