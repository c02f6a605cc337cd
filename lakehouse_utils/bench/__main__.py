"""``make bench``: ``python -m lakehouse_utils.bench [--data-dir data/bench] [--only NAME ...] [--quick]``."""

from __future__ import annotations

import sys

from .suite import main

if __name__ == "__main__":
    sys.exit(main())
