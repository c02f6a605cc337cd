"""``lakehouse backfill --venue V --pair P --since 6h|ISO [--until ISO]``: a venue's REST trade history into the
trades topic, paged and resumable (``kafka/rest_backfill.py``); the pipeline takes it on to Bronze, Silver, Gold.

``--rest-url`` names the REST API (default: the venue's live one); ``--replay`` serves the bundled hour (or
``--file``, a recording in the venue's WebSocket format) from a local REST replay server instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..config import Settings
from ..progress import ProgressLine

VENUES = ("kraken", "coinbase", "binance")
DEFAULT_PAIR = {"kraken": "BTC/USD", "coinbase": "BTC/USD", "binance": "BTC/USDT"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("backfill", help="a venue's trade history over REST -> Kafka (-> Bronze/Silver/Gold), paged, "
                                        "resumable after kill -9")
    p.add_argument("--data-dir", dest="data_dir", help="data root: the cursor is kept in <data>/checkpoints/backfill")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:19092)")
    p.add_argument("--topic", help="trades topic (default crypto.trades)")
    p.add_argument("--kafka-properties", dest="kafka_properties", metavar="FILE", help="Kafka client security")
    p.add_argument("--venue", required=True, choices=VENUES)
    p.add_argument("--pair", default=None, help="BASE/QUOTE (default the venue's BTC/USD, Binance's BTC/USDT)")
    p.add_argument("--since", required=True, help="start: a duration back from now (6h, 30m, 2d) or an ISO time")
    p.add_argument("--until", default=None, help="end, exclusive: a duration back from now or an ISO time "
                                                 "(default: up to the newest trade)")
    p.add_argument("--rest-url", dest="rest_url", default=None, metavar="URL",
                   help="the venue's REST API (default its live one, or LAKEHOUSE_REST_URL)")
    p.add_argument("--replay", action="store_true",
                   help="fetch from a local REST replay server of the bundled hour (2019-07-01 00:00-01:00 UTC)")
    p.add_argument("--file", default=None, help="--replay: the recording it serves, in the venue's WebSocket format")
    p.add_argument("--page-size", dest="rest_page_size", type=int, default=None,
                   help="rows per request (default the venue's maximum, 1000)")
    p.add_argument("--min-interval", dest="rest_min_interval_s", type=float, default=None, metavar="S",
                   help="seconds between two requests (default the venue's: Kraken 1, Binance 0.25, Coinbase 0.1)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """0: the range is fetched and delivered (now or before); 1: stopped early (run again to resume); 2: no Kafka."""
    from ..kafka.rest_backfill import run_backfill
    from ..procs import reachable
    from ..sources.backfill import rest_server

    settings = settings.with_(rest_page_size=args.rest_page_size, rest_min_interval_s=args.rest_min_interval_s)
    deadline = time.monotonic() + 10.0
    while not reachable(settings.bootstrap):
        if time.monotonic() >= deadline:
            print(f"cannot reach Kafka at {settings.bootstrap}: start the embedded broker with `lakehouse broker "
                  "start`, or pass --bootstrap", file=sys.stderr)
            return 2
        time.sleep(0.25)
    server = rest_server(args.venue, args.file).start() if args.replay else None
    url = server.url if server is not None else args.rest_url
    pair = args.pair or DEFAULT_PAIR[args.venue]
    line = ProgressLine(every=0.5, log_every=5.0)
    print(f"backfill {args.venue} {pair} since {args.since} until {args.until or 'the newest'} from "
          f"{url or 'the live API'} -> {settings.bootstrap} topic {settings.topic}", flush=True)
    try:
        result = run_backfill(settings, args.venue, pair, args.since, args.until, url, progress=line.update)
    except ValueError as exc:
        line.done()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    line.done()
    print(result.line(), flush=True)
    print(f"cursor: {result.path}", flush=True)
    return 0 if result.done else 1
