# -*- test-case-name: tests.db -*-
"""
The one door to the database, in four modules:

  - L{socktopus_tw.db.config}: C{--database} URLs and the start-up check;
  - L{socktopus_tw.db.dialect}: one object per backend (SQLite, MySQL) for
    everything that differs between them;
  - L{socktopus_tw.db.door}: L{Database}, its deadlines, and the service owning
    the pool;
  - L{socktopus_tw.db.pool}: the pool, whose work can be given up;
  - L{socktopus_tw.db.schema}: the versioned schema files and the migration.

Every query goes through the pool's threads; nothing here runs SQL on the
reactor thread once the reactor is running.
"""

from socktopus_tw.db.config import (
    DEFAULT_DATABASE,
    DatabaseConfig,
    DatabaseError,
    checkDatabase,
    parseDatabaseUrl,
)
from socktopus_tw.db.door import (
    TIMEOUT,
    Conflict,
    Database,
    DatabaseService,
    Unreachable,
    openPool,
)
from socktopus_tw.db.pool import Pool
from socktopus_tw.db.schema import migrate

__all__ = [
    "DEFAULT_DATABASE",
    "TIMEOUT",
    "Conflict",
    "Database",
    "DatabaseConfig",
    "DatabaseError",
    "DatabaseService",
    "Pool",
    "Unreachable",
    "checkDatabase",
    "migrate",
    "openPool",
    "parseDatabaseUrl",
]
