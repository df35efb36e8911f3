from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support import Daemon


class Smoke(TestCase):
    @inlineCallbacks
    def test_roundtrip(self):
        d = Daemon(self)
        c = yield d.connect("c1")
        status, body, _ = yield d.send([{"recipient": "c1", "content": "hi"}])
        self.assertEqual(status, 200)
        got = yield c.waitFor(1)
        self.assertEqual(got, ["DATA:hi"])
