"""
sdk/js's node modules (playwright-core, ws) for the tests that drive Node
or Chromium. Several trial workers may ask at once: the install runs under
C{flock(1)}, so one worker installs and the others wait for it, in a child
process, never blocking a reactor.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.process import ROOT, run

SDK = os.path.join(ROOT, "sdk", "js")
MODULES = ("playwright-core", "ws")

# npm writes node_modules/.package-lock.json last: without it an install is
# unfinished (another worker's, under way), whatever directories exist.
_INSTALL = (
    "[ -f node_modules/.package-lock.json ] || exec npm ci --no-audit --no-fund; "
    'for m in "$@"; do [ -d "node_modules/$m" ] || exec npm ci --no-audit --no-fund; done'
)


@inlineCallbacks
def ensureSdkModules(testCase: TestCase, env: dict[str, str]):
    """
    Install sdk/js's modules with C{npm ci} unless they are there.
    """
    # Always under the lock: a directory seen outside it may be half written.
    for tool in ("npm", "flock"):
        if shutil.which(tool) is None:
            testCase.fail(
                f"{tool} is not installed (npm comes with Node 20+, flock with util-linux)"
            )
    install = run(
        testCase,
        shutil.which("flock"),
        os.path.join(SDK, ".npm-install.lock"),
        "sh",
        "-c",
        _INSTALL,
        "sh",
        *MODULES,
        env=env,
        path=SDK,
    )
    status = yield install.ended
    testCase.assertEqual(status, 0, (install.output + install.errors).decode())
