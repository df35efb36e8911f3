"""
The SDKs end to end: the Python client and the JavaScript SDK (Node and a
real browser) against a real daemon.
"""
