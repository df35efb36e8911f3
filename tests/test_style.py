"""
The tree is as C{ruff} wants it: lint clean and formatted, checked with
every run of the suite so a change that is not stays visible.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support.process import ROOT


def ruff(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


class StyleTests(SynchronousTestCase):
    def test_lintClean(self) -> None:
        """
        `ruff check` finds nothing.
        """
        result = ruff("check", ".")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_formatted(self) -> None:
        """
        `ruff format --check` would rewrite nothing.
        """
        result = ruff("format", "--check", ".")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
