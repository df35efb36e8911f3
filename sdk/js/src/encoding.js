/**
 * Byte helpers shared by tokens and Auth Headers. Plain JavaScript, so they
 * run unchanged in browsers, Node, Deno and edge functions.
 */

const encoder = new TextEncoder();

/** The UTF-8 bytes of a string. */
export function utf8(text) {
  return encoder.encode(text);
}

/** Lower-case hex, two digits a byte, as the daemon writes and reads it. */
export function hex(bytes) {
  let out = "";
  for (const byte of bytes) {
    out += byte.toString(16).padStart(2, "0");
  }
  return out;
}

/** The bytes of lower- or upper-case hex (of an even length, checked by the caller). */
export function fromHex(text) {
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i += 1) {
    bytes[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
  }
  return bytes;
}

/** Standard base64 (with padding), for `Encoding: base64` Auth Headers. */
export function base64(bytes) {
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary);
}
