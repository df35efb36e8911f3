import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { authHeaders, authHeadersSync } from "socktopus";

import { startDaemon } from "../test-support/daemon.js";

// SPEC §4.1's worked example, from the original's documentation.
const SECRET = "3ar+0wLwgiltTXNZ/eprJ2NaWE7y5k+0r9ThN4+im8RHWH8ksB1xw4554hOTNF8H9rguMBfUaNRWztNQb+nz7A==";
const HMAC = "69aee4c4d9749a6e27c583af898840927975ea861b9d74dc54ef2e3cde14b7c4";

describe("authHeaders", () => {
  test("reproduces SPEC §4.1's worked example", async () => {
    const expected = {
      UserID: "7",
      Path: "/logout",
      "Time-Sent": "1472276742",
      HMAC,
      Encoding: "hex",
    };
    assert.deepEqual(await authHeaders(7, SECRET, "/logout", 1472276742000), expected);
    assert.deepEqual(await authHeaders("7", SECRET, "/logout", new Date(1472276742999)), expected);
    assert.deepEqual(authHeadersSync(7, SECRET, "/logout", 1472276742000), expected);
  });

  test("writes the same HMAC in base64 when asked", async () => {
    const headers = await authHeaders(7, SECRET, "/logout", 1472276742000, "base64");
    assert.equal(headers.HMAC, Buffer.from(HMAC, "hex").toString("base64"));
    assert.equal(headers.Encoding, "base64");
    assert.deepEqual(authHeadersSync(7, SECRET, "/logout", 1472276742000, "base64"), headers);
    await assert.rejects(authHeaders(7, SECRET, "/logout", undefined, "base32"), RangeError);
  });
});

describe("authHeaders against the daemon", () => {
  let daemon;
  let user;
  before(async () => {
    daemon = await startDaemon();
    const post = (path, body) =>
      fetch(daemon.url + path, { method: "POST", body: JSON.stringify(body) });
    const credentials = { User: "alice", Password: "correct horse" };
    const created = await post("/users", { ...credentials, Email: "alice@example.com" });
    assert.equal(created.status, 200);
    const login = await post("/login", credentials);
    assert.equal(login.status, 200);
    user = await login.json();
  });
  after(() => daemon.stop());

  test("signs a request the daemon accepts, once", async () => {
    const path = `/users/${user.UserID}/registered`;
    const headers = await authHeaders(user.UserID, user.Secret, path);
    const first = await fetch(daemon.url + path, { headers });
    assert.deepEqual([first.status, await first.json()], [200, { Registered: true }]);
    const replay = await fetch(daemon.url + path, { headers });
    assert.equal(replay.status, 401);
  });

  test("base64 headers are checked by /authHeaders for another service", async () => {
    const headers = authHeadersSync(user.UserID, user.Secret, "/my-backend/orders?id=3", undefined, "base64");
    const response = await fetch(`${daemon.url}/authHeaders`, { method: "POST", headers });
    assert.equal(response.status, 200);
  });

  test("headers signed with another secret are refused", async () => {
    const headers = await authHeaders(user.UserID, SECRET, "/authHeaders");
    const response = await fetch(`${daemon.url}/authHeaders`, { method: "POST", headers });
    assert.deepEqual([response.status, await response.json()], [401, { Error: "Not Authorized Request" }]);
  });
});
