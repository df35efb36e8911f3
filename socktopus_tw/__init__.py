"""
Socktopus: live WebSocket connections (the relay) and user accounts for
serverless and small backends, on one Twisted reactor.
"""

__version__ = "0.1.0"
