/**
 * What a relay token and a set of Auth Headers are made of, apart from the
 * HMAC itself: the inputs are checked and formatted here once, and the async
 * (Web Crypto) and sync (node:crypto) entry points only differ in how they
 * compute HMAC-SHA256.
 */

import { base64, hex, utf8 } from "./encoding.js";

const APP_NAME = /^[A-Za-z0-9_]{1,64}$/;
const MAX_CONNECTION_ID_BYTES = 256;

function milliseconds(now) {
  const value = now === undefined ? Date.now() : now instanceof Date ? now.getTime() : now;
  if (typeof value !== "number" || !Number.isSafeInteger(Math.floor(value)) || value < 0) {
    throw new TypeError("now must be a Date or Unix time in milliseconds");
  }
  return Math.floor(value);
}

function requireSecret(secret) {
  // Web Crypto refuses an empty HMAC key, and the daemon has no app without one.
  if (typeof secret !== "string" || secret === "") {
    throw new TypeError("secret must be a non-empty string");
  }
}

/**
 * Check a token's inputs; return the HMAC key and message and a function that
 * turns the raw HMAC into the token (SPEC §3.1).
 */
export function tokenRecipe(app, secret, connectionId, now) {
  if (typeof app !== "string" || !APP_NAME.test(app)) {
    throw new TypeError("app must be 1 to 64 letters, digits or _");
  }
  requireSecret(secret);
  if (typeof connectionId !== "string") {
    throw new TypeError("connectionId must be a string");
  }
  const idBytes = utf8(connectionId);
  if (idBytes.length < 1 || idBytes.length > MAX_CONNECTION_ID_BYTES) {
    throw new RangeError("connectionId must be 1 to 256 bytes of UTF-8");
  }
  // T is the decimal millisecond stamp; the daemon signs T + CONNECTION_ID.
  const stamp = String(milliseconds(now));
  return {
    key: secret,
    message: stamp + connectionId,
    finish: (mac) => [hex(utf8(stamp)), hex(utf8(app)), hex(idBytes), hex(mac)].join("h"),
  };
}

/**
 * Check Auth Headers' inputs; return the HMAC key and message and a function
 * that turns the raw HMAC into the headers (SPEC §4.1).
 */
export function headersRecipe(userId, secret, path, now, encoding = "hex") {
  const id = String(userId);
  if (!/^[0-9]{1,19}$/.test(id)) {
    throw new TypeError("userId must be a non-negative integer");
  }
  requireSecret(secret);
  if (typeof path !== "string" || path === "") {
    throw new TypeError("path must be the request's path, query string included");
  }
  if (encoding !== "hex" && encoding !== "base64") {
    throw new RangeError('encoding must be "hex" or "base64"');
  }
  const timeSent = String(Math.floor(milliseconds(now) / 1000));
  return {
    // The key is the session secret as its base64 text, not the decoded bytes.
    key: secret,
    message: `${timeSent}:${path}`,
    finish: (mac) => ({
      UserID: id,
      Path: path,
      "Time-Sent": timeSent,
      HMAC: encoding === "base64" ? base64(mac) : hex(mac),
      Encoding: encoding,
    }),
  };
}
