"""``python -m supervisor``: command-line tools for the supervisor's logs.

``python -m supervisor failures [FILE ...]`` groups the ``task:failed`` lines
of JSON-lines logs; see :mod:`supervisor._failures_cli` or ``--help``.
``python -m supervisor worker APP:QUEUE`` runs the durable worker
(:mod:`supervisor.durable`, the ``redis`` extra).
``python -m supervisor --version`` prints ``nursery-supervisor <version>``.
It imports only the command's own modules, never the runtime.

Exit status: 0 when no failures were found, 1 when failures were found,
2 on a usage error or a file that cannot be read.
"""

from __future__ import annotations

import importlib
import sys

from supervisor._failures_cli import main


def _main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        # The durable worker (the redis extra) is the runtime: loaded only
        # when asked for, so that the log commands never import it.
        worker = importlib.import_module("supervisor.durable.__main__")
        return int(worker.main(argv))
    return main(argv)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
