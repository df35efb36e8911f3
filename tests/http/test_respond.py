"""
Tests for L{socktopus_tw.http.respond}: the one JSON helper every endpoint
answers through.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.http.respond import encodeJson


class EncodeJsonTests(SynchronousTestCase):
    def test_sameBytesAsTheStandardLibrary(self):
        """
        Answers are the bytes json.dumps(separators=(",", ":"),
        ensure_ascii=False) would write for everything the endpoints answer
        with: control characters, quotes, backslashes, U+2028, astral
        characters, nested lists and objects in their order, booleans,
        null and integers.
        """
        strings = [
            "",
            "plain",
            'quote " and \\ backslash',
            "\x00\x01\x1f\x7f\x80\x9f",
            "\b\f\n\r\t",
            "/slash </script>",
            "\u2028\u2029",
            "é ü 日本",
            "\U0001f600",
            "\ufeff",
            "".join(map(chr, range(0x20))),
        ]
        values = [
            {"succeeded": [{"recipient": s, "content": s} for s in strings], "failed": []},
            {"content": "x", "recipient": "y"},
            {
                "Secret": "abc",
                "UserID": 2**53,
                "Registered": True,
                "Other": False,
                "Nothing": None,
                "Negative": -1,
            },
            {"UserIDs": {"alice": 1}, "Errors": {}},
            [],
            {},
        ]
        for value in values:
            self.assertEqual(
                encodeJson(value),
                json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
            )
