"""
The accounts service (SPEC §4), wire-compatible with the original auth
server: rules, headers and passwords are pure or thread-bound helpers, store
holds all SQL, sessions caches them, service is the domain, api the web layer.
"""
