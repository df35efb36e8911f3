"""
Shared helpers for the tests: the real daemon and its clients, the accounts
helpers, a throwaway MariaDB, child processes, fakes and in-memory sites.
Nothing here is a test; test modules import from here and never from each other.
"""
