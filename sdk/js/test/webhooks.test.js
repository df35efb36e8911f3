import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";

import { verifyWebhook, verifyWebhookSync } from "socktopus";

import { VENV_BIN } from "../test-support/daemon.js";

const KEY = "app-secret-0123456789";
const STAMP = "1700000000000";
const NOW = 1700000000000;
const BODY =
  '{"app":"demo","events":[{"type":"message","connection":"conn-1","time":1700000000120,' +
  '"content":"hé 🐙"}]}';
// HMAC_SHA256(KEY, STAMP + "." + BODY) in hex, computed by Python's hmac.
const V1 = "70233afab83ece61cc47119f22df85767a978f6347ac9eaeed6aed14e51dd6e9";
const HEADER = `t=${STAMP},v1=${V1}`;

/** SPEC §7.2's signature, computed here with node:crypto. */
function sign(body, stamp = STAMP, secret = KEY) {
  return createHmac("sha256", secret).update(`${stamp}.`).update(body).digest("hex");
}

/** Both entry points' answers, which must agree. */
async function both(body, header, secret = KEY, now = NOW) {
  const sync = verifyWebhookSync(body, header, secret, now);
  assert.equal(await verifyWebhook(body, header, secret, now), sync, String(header));
  return sync;
}

/** The Python SDK's verify_webhook for the same inputs (body as UTF-8). */
async function python(cases) {
  const script =
    "import json, sys\n" +
    "from socktopus_tw.client import verify_webhook\n" +
    "cases = json.loads(sys.argv[1])\n" +
    "print(json.dumps([verify_webhook(b.encode(), h, k, now=n / 1000) for b, h, k, n in cases]))\n";
  const { stdout } = await promisify(execFile)(join(VENV_BIN, "python"), [
    "-c",
    script,
    JSON.stringify(cases),
  ]);
  return JSON.parse(stdout);
}

const BAD_HEADERS = [
  undefined,
  null,
  "",
  " ",
  V1,
  `v1=${V1}`,
  `t=${STAMP}`,
  `t=${STAMP},`,
  `t=${STAMP},v1=`,
  `t=${STAMP},v1=${V1.slice(0, -2)}`,
  `t=${STAMP},v1=${V1}00`,
  `t=${STAMP},v1=${V1.slice(0, -1)}g`,
  `t=${STAMP},v1=${V1},v1`,
  `t=${STAMP};v1=${V1}`,
  `t= ${STAMP},v1=${V1}`,
  `t=${STAMP}.0,v1=${V1}`,
  `t=-${STAMP},v1=${V1}`,
  `t=${STAMP},t=${STAMP},v1=${V1}`,
  `t=١٧,v1=${V1}`,
  `t=${"9".repeat(5000)},v1=${V1}`,
  `T=${STAMP},V1=${V1}`,
  `t=${STAMP},v0=${V1}`,
  `\uFEFFt=${STAMP},v1=${V1}`,
  `t=${STAMP},v1=${V1}\n`,
  "t=,v1=",
];

const GOOD_HEADERS = [
  HEADER,
  `t=${STAMP}, v1=${V1}`,
  `t=${STAMP},\tv1=${V1} `,
  `v1=${V1},t=${STAMP}`,
  `t=${STAMP},v1=${V1.toUpperCase()}`,
  `t=${STAMP},v2=whatever,v1=${V1}`,
  `t=${STAMP},v1=${"0".repeat(64)},v1=${V1}`,
];

describe("verifyWebhook", () => {
  test("accepts the daemon's signature of the raw body, however the body is held", async () => {
    const bytes = Buffer.from(BODY, "utf8");
    for (const body of [
      BODY,
      bytes,
      new Uint8Array(bytes),
      new Uint8Array(bytes).buffer,
      new DataView(new Uint8Array(bytes).buffer),
    ]) {
      assert.equal(await both(body, HEADER), true, body.constructor.name);
    }
    // As Node's http hands a repeated header over.
    assert.equal(await both(BODY, [HEADER]), true);
  });

  test("agrees with a signature computed here, for any body", async () => {
    for (const body of ["", "{}", "x".repeat(100_000), "\u2028\0\"'<>", "日本語 🐙"]) {
      assert.equal(await both(body, `t=${STAMP},v1=${sign(body)}`), true, body.slice(0, 20));
      assert.equal(await both(`${body} `, `t=${STAMP},v1=${sign(body)}`), false);
    }
  });

  test("refuses another body, secret, stamp or signature", async () => {
    assert.equal(await both(`${BODY} `, HEADER), false);
    assert.equal(await both(BODY.replace("conn-1", "conn-2"), HEADER), false);
    assert.equal(await both(BODY, HEADER, `${KEY}x`), false);
    assert.equal(await both(BODY, `t=1700000000001,v1=${V1}`, KEY, NOW), false);
    const flipped = V1.slice(0, -1) + (V1.endsWith("0") ? "1" : "0");
    assert.equal(await both(BODY, `t=${STAMP},v1=${flipped}`), false);
  });

  test("refuses stamps more than 5 minutes old or ahead, rightly signed or not", async () => {
    for (const [offset, accepted] of [
      [0, true],
      [300_000, true],
      [-300_000, true],
      [300_001, false],
      [-300_001, false],
      [86_400_000, false],
    ]) {
      assert.equal(await both(BODY, HEADER, KEY, NOW + offset), accepted, String(offset));
    }
    assert.equal(await both(BODY, HEADER, KEY, new Date(NOW + 1000)), true);
    // By default the clock decides: this stamp is long past.
    assert.equal(await verifyWebhook(BODY, HEADER, KEY), false);
    assert.equal(verifyWebhookSync(BODY, HEADER, KEY), false);
  });

  test("a malformed header is false, never an error", async () => {
    for (const header of BAD_HEADERS) {
      assert.equal(await both(BODY, header), false, JSON.stringify(header));
    }
    for (const header of GOOD_HEADERS) {
      assert.equal(await both(BODY, header), true, header);
    }
  });

  test("a body that is not raw, or no secret, is a TypeError", async () => {
    for (const body of [JSON.parse(BODY), undefined, null, 42, [1, 2]]) {
      await assert.rejects(verifyWebhook(body, HEADER, KEY, NOW), TypeError);
      assert.throws(() => verifyWebhookSync(body, HEADER, KEY, NOW), TypeError);
    }
    for (const secret of ["", undefined, 7]) {
      await assert.rejects(verifyWebhook(BODY, HEADER, secret, NOW), TypeError);
      assert.throws(() => verifyWebhookSync(BODY, HEADER, secret, NOW), TypeError);
    }
  });

  test("gives the Python SDK's verify_webhook answers for the same inputs", async () => {
    const cases = [
      ...[...BAD_HEADERS, ...GOOD_HEADERS]
        .filter((header) => typeof header === "string")
        .map((header) => [BODY, header, KEY, NOW]),
      [BODY, HEADER, KEY, NOW + 300_001],
      [BODY, HEADER, "other", NOW],
    ];
    const expected = await python(cases);
    const answers = cases.map(([body, header, secret, now]) =>
      verifyWebhookSync(body, header, secret, now),
    );
    assert.deepEqual(answers, expected);
  });
});
