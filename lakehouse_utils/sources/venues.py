"""The venues by name: each one's live adapter, replay server and default pair (and the replay CLI).

| name | exchange | adapter (live endpoint) | replay server | default pair |
|---|---|---|---|---|
| ``kraken`` | kraken | ``kraken.KrakenV2Source`` (``wss://ws.kraken.com/v2``) | ``replay.ReplayServer`` | BTC/USD |
| ``coinbase`` | coinbase | ``coinbase.CoinbaseExchangeSource`` (Exchange feed, ``matches``) | ``coinbase_replay.CoinbaseReplayServer`` | BTC/USD |
| ``coinbase-advanced`` | coinbase | ``coinbase.CoinbaseAdvancedSource`` (``market_trades``) | ``coinbase_replay.CoinbaseAdvancedReplayServer`` | BTC/USD |
| ``binance`` | binance | ``binance.BinanceSource`` (Spot, ``<symbol>@trade``) | ``binance_replay.BinanceReplayServer`` | BTC/USDT |

``python -m lakehouse_utils.sources.venues [recording] --venue coinbase --speed 10 --port 8765`` serves a recording
(default: the bundled hour in the venue's format) until Ctrl-C.
"""  # noqa: E501

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .binance import BinanceSource
from .binance_replay import BinanceReplayServer
from .coinbase import CoinbaseAdvancedSource, CoinbaseExchangeSource
from .coinbase_replay import CoinbaseAdvancedReplayServer, CoinbaseReplayServer
from .kraken import KrakenV2Source
from .recording import Recording
from .replay import ReplayServer
from .replay_server import ReplayServerBase
from .ws import WebSocketSource


@dataclass(frozen=True)
class Venue:
    name: str
    exchange: str
    source: type[WebSocketSource]
    replay: type[ReplayServerBase]
    default_pair: str

    @property
    def url(self) -> str:
        return self.source.default_url


VENUES: dict[str, Venue] = {v.name: v for v in (
    Venue("kraken", "kraken", KrakenV2Source, ReplayServer, "BTC/USD"),
    Venue("coinbase", "coinbase", CoinbaseExchangeSource, CoinbaseReplayServer, "BTC/USD"),
    Venue("coinbase-advanced", "coinbase", CoinbaseAdvancedSource, CoinbaseAdvancedReplayServer, "BTC/USD"),
    Venue("binance", "binance", BinanceSource, BinanceReplayServer, "BTC/USDT"),
)}


def venue(name: str) -> Venue:
    """The venue called ``name`` (a ValueError naming the choices otherwise)."""
    if name not in VENUES:
        raise ValueError(f"unknown venue {name!r}; choose one of {', '.join(VENUES)}")
    return VENUES[name]


def parse_venues(text: str | list[str] | tuple[str, ...] | None, default: str = "kraken") -> list[str]:
    """``"kraken,coinbase"`` (or a list of such) -> ``["kraken", "coinbase"]``, each checked, none twice."""
    parts = [text] if isinstance(text, str) else list(text or [])
    names = [n.strip().lower() for part in parts for n in part.split(",") if n.strip()]
    for name in names:
        venue(name)
    return list(dict.fromkeys(names)) or [default]


def replay_server(name: str, recording: Recording | None = None, speed: float | str = "max",
                  **options: Any) -> ReplayServerBase:
    """The replay server of venue ``name`` (not started)."""
    return venue(name).replay(recording, speed, **options)


def live_source(name: str, pairs: list[str] | None = None, url: str | None = None, **options: Any) -> WebSocketSource:
    """The live adapter of venue ``name`` (``pairs`` default to the venue's default pair)."""
    v = venue(name)
    return v.source(pairs or [v.default_pair], url or v.url, **options)


def serve(recording: str | Path | None = None, speed: float | str = "max", port: int = 8765,
          name: str = "kraken") -> None:
    """Serve a recording on 127.0.0.1:``port`` as venue ``name`` would, until Ctrl-C."""
    with replay_server(name, recording, speed, port=port) as server:
        print(f"replaying {recording or 'the bundled hour'} as {name} on {server.url} (speed {speed})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replay a recording over WebSocket, as the venue sends it.")
    parser.add_argument("recording", nargs="?", default=None, help="JSONL(.gz); default: the bundled hour")
    parser.add_argument("--venue", default="kraken", choices=list(VENUES))
    parser.add_argument("--speed", default="max", help="'max' or a factor (1 = real time)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    serve(args.recording, args.speed, args.port, args.venue)


if __name__ == "__main__":
    main()


__all__ = ["VENUES", "Venue", "live_source", "parse_venues", "replay_server", "serve", "venue"]
