"""
Tests for L{socktopus_tw.http}: JSON answers, the twisted.web site, the fast
path, the client address behind a proxy and direct writes.
"""
