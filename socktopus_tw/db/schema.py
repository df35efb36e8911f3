# -*- test-case-name: tests.db.test_schema -*-
"""
The versioned schema: the files in C{schema/} (C{NNN.sqlite.sql} and
C{NNN.mysql.sql}, shipped as package data) and the one-row version table
that says how many of them a database has had.
"""

from __future__ import annotations

from importlib import resources

from socktopus_tw.db.config import DatabaseConfig

SCHEMA_TABLE = "socktopus_schema"


def schemaVersions(config: DatabaseConfig) -> list[tuple[int, str]]:
    """
    The shipped schema files for this database, as (version, SQL), in order.
    """
    suffix = config.dialect.schemaSuffix
    folder = resources.files("socktopus_tw.db") / "schema"
    versions = []
    for entry in folder.iterdir():
        if entry.name.endswith(suffix):
            versions.append((int(entry.name.split(".")[0]), entry.read_text("utf-8")))
    return sorted(versions)


def statements(script: str) -> list[str]:
    """
    Split a schema file into statements: comments dropped, split at C{;}
    ending a line (the files hold no semicolons inside strings).
    """
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]


def migrate(config: DatabaseConfig) -> tuple[int, int]:
    """
    Bring the schema up to the newest shipped version in one transaction;
    return (version before, version after). Run once at start, before the
    reactor runs and before anything listens, so blocking here is fine.

    MySQL commits DDL implicitly, so there a failed upgrade can leave part of
    a version applied; each version file is therefore small.
    """
    dialect = config.dialect
    connection = dialect.connect(config.arguments)
    try:
        cursor = dialect.openTransaction(connection)
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
        cursor.execute(f"SELECT version FROM {SCHEMA_TABLE}")
        row = cursor.fetchone()
        if row is None:
            cursor.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
            before = 0
        else:
            before = row[0]
        after = before
        for version, script in schemaVersions(config):
            if version > before:
                for statement in statements(script):
                    cursor.execute(statement)
                after = version
        cursor.execute(f"UPDATE {SCHEMA_TABLE} SET version = {int(after)}")
        cursor.execute("COMMIT")
        return before, after
    finally:
        connection.close()
