# -*- test-case-name: tests.deploy.test_first_contact -*-
"""
C{python -m socktopus_tw}: the C{socktopus} command, for a Python whose
scripts are not on C{PATH}.
"""

from socktopus_tw.cli import main

raise SystemExit(main())
