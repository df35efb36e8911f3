/**
 * What a relay token, a set of Auth Headers and a webhook's signature are
 * made of, apart from the HMAC itself: the inputs are checked and formatted
 * here once, and the async (Web Crypto) and sync (node:crypto) entry points
 * only differ in how they compute HMAC-SHA256.
 */

import { base64, fromHex, hex, utf8 } from "./encoding.js";

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

/** How far a webhook's signed time may be from now, either way: 5 minutes. */
export const WEBHOOK_TOLERANCE = 5 * 60 * 1000;

function bodyBytes(body) {
  if (typeof body === "string") return utf8(body);
  if (body instanceof Uint8Array) return body; // Buffer too
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError(
    "body must be the raw request body (a string, Buffer, Uint8Array or ArrayBuffer), " +
      "not a parsed object: a re-encoded body is not what was signed",
  );
}

/**
 * Check a webhook's inputs and read its Socktopus-Signature header,
 * `t=<ms>,v1=<hex>` (SPEC §7.2). Return null when it cannot be the daemon's
 * (no header, a malformed one, or a time more than 5 minutes from now),
 * else the HMAC key and message and the signatures to compare, as bytes.
 * Parts other than t and v1 are ignored; any v1 may match.
 */
export function webhookRecipe(body, header, secret, now) {
  const bytes = bodyBytes(body);
  requireSecret(secret);
  const current = milliseconds(now);
  const value = Array.isArray(header) ? header[0] : header;
  if (typeof value !== "string") return null;
  let stamp;
  const macs = [];
  for (const part of value.split(",")) {
    // Optional whitespace as HTTP has it (spaces, tabs), nothing more.
    const text = part.replace(/^[ \t]+|[ \t]+$/g, "");
    const equals = text.indexOf("=");
    if (equals < 0) return null;
    const name = text.slice(0, equals);
    const field = text.slice(equals + 1);
    if (name === "t") {
      // 15 digits at most: every such number is exact as a double.
      if (stamp !== undefined || !/^[0-9]{1,15}$/.test(field)) return null;
      stamp = field;
    } else if (name === "v1" && /^[0-9a-fA-F]{64}$/.test(field)) {
      macs.push(fromHex(field));
    }
  }
  if (stamp === undefined || macs.length === 0) return null;
  // Older is a replay; newer, a clock that is badly wrong or a forgery.
  if (Math.abs(current - Number(stamp)) > WEBHOOK_TOLERANCE) return null;
  const prefix = utf8(`${stamp}.`);
  const message = new Uint8Array(prefix.length + bytes.length);
  message.set(prefix);
  message.set(bytes, prefix.length);
  return { key: secret, message, macs };
}
