import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import { createToken, createTokenSync } from "socktopus";

import { APP, SECRET, startDaemon, VENV_BIN } from "../test-support/daemon.js";

const CASES = [
  ["demo", "demo-secret-0123456789", "user-42", 1700000000000],
  ["My_App_2", "sécret ✓ with spaces", "conn/ü ✓ 🐙", 1472276742123],
  ["a", "s", "x".repeat(256), 0],
];

/** The daemon's own makeToken, run in its Python for the same inputs. */
async function pythonTokens(cases) {
  const script =
    "import json, sys\n" +
    "from socktopus_tw.relay.tokens import makeToken\n" +
    "print(json.dumps([makeToken(*case) for case in json.loads(sys.argv[1])]))\n";
  const { stdout } = await promisify(execFile)(join(VENV_BIN, "python"), [
    "-c",
    script,
    JSON.stringify(cases),
  ]);
  return JSON.parse(stdout);
}

describe("createToken", () => {
  test("is identical to the daemon's Python makeToken for the same inputs and time", async () => {
    const expected = await pythonTokens(CASES);
    const fromWebCrypto = await Promise.all(CASES.map((args) => createToken(...args)));
    const fromNodeCrypto = CASES.map((args) => createTokenSync(...args));
    assert.deepEqual(fromWebCrypto, expected);
    assert.deepEqual(fromNodeCrypto, expected);
  });

  test("writes T as decimal milliseconds in hex, as SPEC §3.1 shows", async () => {
    const token = await createToken("demo", "s", "c", new Date(1700000000000));
    assert.equal(token.split("h")[0], "31373030303030303030303030");
    assert.equal(token.split("h")[2], "63");
  });

  test("refuses what the daemon would refuse, before asking it", async () => {
    await assert.rejects(createToken(APP, SECRET, "x".repeat(257)), RangeError);
    await assert.rejects(createToken(APP, SECRET, ""), RangeError);
    await assert.rejects(createToken("no-dashes", SECRET, "c1"), TypeError);
    await assert.rejects(createToken(APP, "", "c1"), TypeError);
    assert.throws(() => createTokenSync(APP, SECRET, "c1", -1), TypeError);
  });
});

describe("tokens against the daemon", () => {
  let daemon;
  before(async () => {
    daemon = await startDaemon();
  });
  after(() => daemon.stop());

  /** The daemon checks a token before the upgrade, so plain GET shows its verdict. */
  async function verdict(token) {
    const response = await fetch(`${daemon.url}/recieve?token=${token}`);
    return [response.status, (await response.json()).message];
  }

  test("accepts a token from createToken and opens a WebSocket with it", async () => {
    assert.deepEqual(await verdict(await createToken(APP, SECRET, "js-1")), [426, "Upgrade required"]);
    assert.deepEqual(await verdict(createTokenSync(APP, SECRET, "js-2")), [426, "Upgrade required"]);
    const socket = new WebSocket(`${daemon.wsUrl}/recieve?token=${await createToken(APP, SECRET, "js-3")}`);
    const outcome = await new Promise((resolve) => {
      socket.onopen = () => resolve("open");
      socket.onclose = (event) => resolve(`closed ${event.code}`);
    });
    assert.equal(outcome, "open");
    socket.send("PING");
    const answer = await new Promise((resolve) => {
      socket.onmessage = (event) => resolve(event.data);
    });
    assert.equal(answer, "PONG");
    socket.close();
  });

  test("a token signed with another secret or stamped long ago is refused", async () => {
    assert.deepEqual(await verdict(await createToken(APP, "not-the-secret", "js-4")), [
      401,
      "Invalid signature",
    ]);
    const aMinuteAgo = Date.now() - 60_000;
    assert.deepEqual(await verdict(await createToken(APP, SECRET, "js-5", aMinuteAgo)), [
      401,
      "Token expired",
    ]);
    assert.deepEqual(await verdict(await createToken("nosuchapp", SECRET, "js-6")), [
      404,
      "Secret not found",
    ]);
  });
});
