"""``python -m supervisor``: command-line tools for the supervisor's logs.

``python -m supervisor failures [FILE ...]`` groups the ``task:failed`` lines
of JSON-lines logs; see :mod:`supervisor._failures_cli` or ``--help``.
``python -m supervisor --version`` prints ``nursery-supervisor <version>``.
It imports only the command's own modules, never the runtime.

Exit status: 0 when no failures were found, 1 when failures were found,
2 on a usage error or a file that cannot be read.
"""

from __future__ import annotations

import sys

from supervisor._failures_cli import main

if __name__ == "__main__":
    sys.exit(main())
