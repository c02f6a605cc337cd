"""``python -m lakehouse_utils.bench.poll GOLD_DIR OUT.jsonl [INTERVAL [MAX_SECONDS]]``: the bench's Gold reader
process."""

from __future__ import annotations

import sys

from .latency import poll_gold

if __name__ == "__main__":
    gold, out = sys.argv[1], sys.argv[2]
    poll_gold(gold, out, float(sys.argv[3]) if len(sys.argv) > 3 else 0.2,
              max_seconds=float(sys.argv[4]) if len(sys.argv) > 4 else 3600.0)
