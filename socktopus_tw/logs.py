"""
Log observers for twistd's C{--logger} option.

C{twistd -n --logger socktopus_tw.logs.json socktopus} writes one JSON object
per line (Twisted's own event format: C{log_format}, C{log_level},
C{log_namespace}, C{log_time} and the event's fields such as C{app} and
C{connectionId}), ready for journald, Loki or jq.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json() -> ILogObserver:
    """
    JSON lines on standard output.
    """
    return jsonFileLogObserver(sys.stdout)
