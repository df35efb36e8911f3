"""
Tests for L{socktopus_tw.db}: C{--database} URLs, the versioned schema, the
one door to the database on a real MariaDB, and the throwaway MariaDB the
tests use.
"""
