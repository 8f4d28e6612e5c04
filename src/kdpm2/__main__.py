"""Run the command line: ``python -m kdpm2`` and the ``kdpm2`` script both start here."""

from __future__ import annotations

import signal
import sys
from typing import Any


def _terminated_while_loading(signum: int, frame: Any) -> None:
    print("kdpm2: terminated (SIGTERM); no output file was changed", file=sys.stderr)
    raise SystemExit(143)


def run() -> int:
    """Load and run :func:`kdpm2.cli.main`; Ctrl-C or SIGTERM while loading is one line too."""
    previous = signal.signal(signal.SIGTERM, _terminated_while_loading)
    try:
        from kdpm2.cli import main  # numpy (and with --backend torch, torch) load here
    except KeyboardInterrupt:
        print("kdpm2: interrupted (Ctrl-C); no output file was changed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return main()


if __name__ == "__main__":
    sys.exit(run())
