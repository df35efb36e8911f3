"""
Tests for L{socktopus_tw.accounts}: rules, Auth Headers, passwords, the SQL
store, sessions, and the accounts service end to end (also on MariaDB).
"""
