"""
The relay (SPEC §3): tokens and the connection registry are pure domain;
websocket and api are the thin protocol and web layers around them.
"""
