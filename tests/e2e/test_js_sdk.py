"""
The JavaScript SDK (sdk/js) in the suite: its own node tests, which start
this package's daemon themselves, and its real-browser test in Debian's
Chromium. Node and Chromium are requirements of the suite, so a missing one
fails here rather than skipping.
"""

from __future__ import annotations

import os
import shutil
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.npm import ensureSdkModules
from tests.support.process import ROOT, run

SDK = os.path.join(ROOT, "sdk", "js")
CHROMIUM = "/usr/bin/chromium"


class JavaScriptSDKTests(TestCase):
    # npm ci fetches playwright-core the first time; the tests take seconds.
    timeout = 300

    def environment(self) -> dict[str, str]:
        """
        What node and npm need, and where the daemon's twistd and python are.
        """
        env = {
            name: value
            for name, value in os.environ.items()
            if name.startswith(("npm_config_", "NPM_CONFIG_", "NODE_EXTRA_CA_CERTS"))
        }
        env["HOME"] = os.environ.get("HOME", self.mktemp())
        env["SOCKTOPUS_VENV_BIN"] = os.path.dirname(sys.executable)
        env["CHROMIUM"] = CHROMIUM
        return env

    def tool(self, name: str, install: str) -> str:
        found = shutil.which(name)
        if found is None:
            self.fail(f"{name} is not installed: {install}")
        return found

    @inlineCallbacks
    def test_nodeTestsPass(self):
        """
        `node --test test/` in sdk/js: token interop with the daemon's Python,
        Auth Headers, send, kick, reconnecting after a dropped socket, typed
        errors, and the page in headless Chromium that is sent a message and
        kicked.
        """
        node = self.tool("node", "the SDK needs Node 20 or newer, with npm")
        if not os.access(CHROMIUM, os.X_OK):
            self.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium")
        env = self.environment()
        version = run(self, node, "-p", "process.versions.node", env=env, path=SDK)
        self.assertEqual((yield version.ended), 0, version.errors.decode())
        major = int(version.output.split(b".")[0])
        if major < 20:
            self.fail(f"node {version.output.decode().strip()} is too old: the SDK needs Node 20+")
        yield ensureSdkModules(self, env)
        # Node 20 has WebSocket behind this flag (22 has it on and still accepts it).
        tests = run(
            self,
            node,
            "--experimental-websocket",
            "--test",
            "--test-timeout=60000",
            "test/",
            env=env,
            path=SDK,
        )
        status = yield tests.ended
        self.assertEqual(status, 0, (tests.output + tests.errors).decode())
