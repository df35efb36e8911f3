"""
Tests for L{socktopus_tw.relay}: tokens, registry, admission, the WebSocket
layer and upgrade, /send and /kick, sliced bodies, the home page, and the
relay end to end.
"""
