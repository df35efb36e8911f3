# -*- test-case-name: tests.test_options -*-
"""
The daemon's environment: the process environment over a C{.env} file.

The Go original read C{.env} from its working directory too; as there, the
real environment always wins over the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DOTENV = ".env"


class EnvironmentError_(ValueError):
    """
    The C{.env} file could not be read or parsed; the message says where.
    """


def parseDotEnv(text: str, filename: str = DOTENV) -> dict[str, str]:
    """
    Parse C{NAME=VALUE} lines. Blank lines and C{#} comments are skipped, an
    C{export } prefix is allowed, and a value may be wrapped in matching
    single or double quotes (taken literally, no escapes).
    """
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, equals, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise EnvironmentError_(
                f"{filename} line {number}: expected NAME=VALUE, got {line[:40]!r}"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def loadEnvironment(
    environ: Mapping[str, str] | None = None, path: str = DOTENV
) -> dict[str, str]:
    """
    The process environment laid over the C{.env} file at C{path}, if any.
    """
    if environ is None:
        environ = os.environ
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise EnvironmentError_(f"cannot read {path}: {e}") from None
    merged = parseDotEnv(text, path)
    merged.update(environ)
    return merged
