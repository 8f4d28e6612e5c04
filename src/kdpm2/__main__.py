"""Run the command line as ``python -m kdpm2``."""

from __future__ import annotations

import sys

from kdpm2.cli import main

if __name__ == "__main__":
    sys.exit(main())
