"""The trade sources by name: the live venues, a replay of a recording through a venue's protocol, synthetic.

``make_source(kind, pairs, ...)`` returns ``(source, cleanup)``: call ``cleanup`` once the stream ended (it stops
a replay server). Kinds (:data:`SOURCE_KINDS`):

- ``kraken``, ``coinbase``, ``coinbase-advanced``, ``binance``: the venue's live WebSocket (``url`` overrides
  the endpoint), recorded to ``record`` in the venue's format;
- ``replay``: the replay server of ``venue`` (default kraken, ``sources/venues.py``) playing ``file`` (default:
  the bundled real hour, re-encoded in the venue's format) at ``speed`` ("max" or a factor, 1 = real time),
  read by that venue's adapter; the stream ends with the recording. Without ``pairs`` it plays every symbol
  the recording holds. ``drop=(at_s, away_s)``: the server drops the connection ``at_s`` seconds of recording
  time into the replay and the recording goes on for ``away_s`` seconds while the client is away (a gap: the
  trades of that time are missed, but Kraken's snapshot, :func:`drop_window`); ``start_s``: the replay starts
  that many seconds of recording time in (what came before is history: ``kafka/history.py``);
- ``synthetic``: a seeded random walk, ``SYNTHETIC_BASE_RATE`` x ``speed`` trades/s ("max": as fast as possible
  on a simulated clock), ``n_trades`` in total (None: endless); ``profile="soak"`` varies the rate over time
  (quiet minutes and bursts: ``synthetic.soak_rate``).

Live and synthetic sources without ``pairs`` take the venue's default pair (BTC/USD; BTC/USDT on Binance).
A pair may name its venue, ``binance:BTC/USDT``: only that venue takes it (:func:`pairs_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..sources.recording import entries
from ..sources.replay_server import ReplayServerBase
from ..sources.trades import TradeSource
from ..sources.venues import VENUES, live_source, replay_server

LIVE_KINDS = tuple(VENUES)  # kraken, coinbase, coinbase-advanced, binance
SOURCE_KINDS = (*LIVE_KINDS, "replay", "synthetic")
SYNTHETIC_BASE_RATE = 50.0  # trades/s of the synthetic source at speed 1


def _noop() -> None:
    return None


def pairs_for(venue: str, pairs: list[str] | tuple[str, ...] | None) -> list[str]:
    """The pairs meant for ``venue``: the plain ones, and those written ``<venue>:BASE/QUOTE``."""
    out = []
    for pair in pairs or []:
        named, sep, rest = pair.partition(":")
        if not sep:
            out.append(pair)
        elif named.strip().lower() == venue:
            out.append(rest)
    return out


def make_source(
    kind: str,
    pairs: list[str] | tuple[str, ...] | None,
    *,
    url: str | None = None,
    file: str | Path | None = None,
    speed: float | str = "max",
    record: str | Path | None = None,
    seed: int = 42,
    n_trades: int | None = None,
    venue: str = "kraken",
    drop: tuple[float, float] | None = None,
    start_s: float = 0.0,
    profile: str = "steady",
) -> tuple[TradeSource, Callable[[], None]]:
    """Build a source by name (see the module doc); returns ``(source, cleanup)``."""
    if kind in LIVE_KINDS:
        return live_source(kind, pairs_for(kind, pairs), url, record=record), _noop
    if kind == "replay":
        server = replay_server(venue, file, speed, close_when_done=True, start_s=start_s)
        if drop is not None:
            server.drop_after, server.skip_on_drop = drop_window(server, *drop)
        server.start()
        try:
            mine = pairs_for(venue, pairs)
            source = VENUES[venue].source(mine or server.pairs, server.url, end_on_close=True, record=record)
        except Exception:
            server.stop()
            raise
        return source, server.stop
    if kind == "synthetic":
        from ..sources.synthetic import SyntheticSource

        rate = None if str(speed) == "max" else SYNTHETIC_BASE_RATE * float(speed)
        return SyntheticSource(pairs_for("synthetic", pairs) or ["BTC/USD"], seed=seed, rate=rate,
                               n_trades=n_trades, profile=profile), _noop
    raise ValueError(f"unknown source {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")


def drop_window(server: ReplayServerBase, at_s: float, away_s: float) -> tuple[int, int]:
    """``(drop_after, skip_on_drop)`` of a replay server playing every symbol: drop the connection ``at_s`` seconds
    of recording time into the replay; the frames of the next ``away_s`` seconds happen while the client is away."""
    _, rows = server.split_greeting(entries(server.recording))
    times = [row.get("recv_ms") for row in rows]
    start = next((t for t in times if t is not None), 0)

    def index(seconds: float) -> int:
        return next((i for i, t in enumerate(times) if t is not None and t >= start + seconds * 1000), len(times))

    first, end = index(at_s), index(at_s + away_s)
    return max(1, first), end - first


def parse_speed(text: str | float | None) -> float | str:
    """'max' (or empty) -> 'max'; '10' -> 10.0 (must be > 0)."""
    if text is None or str(text).strip().lower() in ("", "max"):
        return "max"
    value = float(text)
    if value <= 0:
        raise ValueError(f"speed must be > 0 or 'max', got {text!r}")
    return value


__all__ = ["LIVE_KINDS", "SOURCE_KINDS", "SYNTHETIC_BASE_RATE", "drop_window", "make_source", "pairs_for",
           "parse_speed"]
