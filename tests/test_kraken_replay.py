"""KrakenV2Source against a real local ReplayServer (real sockets, no mocks)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse_utils.sources.kraken import KrakenV2Source, read_recording
from lakehouse_utils.sources.replay import SAMPLE_RECORDING, ReplayServer
from lakehouse_utils.sources.trades import MAX_RAW_CHARS, Rejected, Trade
from tests.venue_fixtures import collect, rejects_of, trades_of

SAMPLE_PRINTS = 2672
SAMPLE_DISTINCT = 2671


def trade_frame(*items: dict[str, object], kind: str = "update") -> str:
    return json.dumps({"channel": "trade", "type": kind, "data": list(items)})


def trade_item(trade_id: object = "inj-1", **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "symbol": "BTC/USD",
        "side": "buy",
        "price": 10800.0,
        "qty": 0.01,
        "trade_id": trade_id,
        "timestamp": "2019-07-01T00:00:10.000000Z",
    }
    base.update(changes)
    return base


@pytest.fixture
def tiny_recording(tmp_path: Path) -> Path:
    """A status frame, 5 one-trade frames 200 ms apart, one raw line, a heartbeat."""
    rows: list[dict[str, object]] = [
        {"recv_ms": 1_000, "frame": {"channel": "status", "type": "update", "data": [{"system": "online"}]}}
    ]
    for n in range(1, 6):
        item = trade_item(n, symbol="BTC/USDT", price=60000.0 + n, timestamp=f"2024-01-01T00:00:0{n}.000001Z")
        rows.append({"recv_ms": 1_000 + 200 * n, "frame": {"channel": "trade", "type": "update", "data": [item]}})
    rows.append({"recv_ms": 2_300, "raw": "garbage that is not json"})
    rows.append({"recv_ms": 2_400, "frame": {"channel": "heartbeat"}})
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bundled_hour_replays_exactly() -> None:
    with ReplayServer(close_when_done=True) as server:
        source = KrakenV2Source(["BTC/USD"], server.url, end_on_close=True)
        items = collect(source)
        assert server.finished.is_set()
    trades = trades_of(items)
    assert len(trades) == SAMPLE_PRINTS
    assert len({t.trade_id for t in trades}) == SAMPLE_DISTINCT
    assert trades[0].price == 10749.4 and trades[-1].price == 11014.3
    assert max(t.price for t in trades) == 11041.8 and min(t.price for t in trades) == 10600.0
    assert {t.symbol for t in trades} == {"BTC/USD"}
    assert {t.exchange for t in trades} == {"kraken"}
    assert all(t.ord_type is None for t in trades)
    assert rejects_of(items) == []
    assert source.stats["rejected"] == 0 and source.stats["trades"] == SAMPLE_PRINTS
    # status + subscribe ack + (empty) snapshot + 2,671 recorded trade frames
    assert source.stats["frames"] == 3 + SAMPLE_DISTINCT
    assert source.stats["reconnects"] == 0 and source.stats["snapshot_repeats"] == 0
    assert source.stats["last_trade"] == trades[-1]
    assert source.stats["connected"] is False
    assert server.frames_sent == SAMPLE_DISTINCT and len(server.trades_sent) == SAMPLE_PRINTS


def test_forced_disconnect_reconnects_and_loses_nothing() -> None:
    with ReplayServer(drop_after=1000) as server:
        source = KrakenV2Source(["BTC/USD"], server.url, backoff_initial=0.05)
        items = collect(source, until=lambda items: server.finished.is_set() and items[-1].trade_id == "2671")
        assert server.connections == 2 and server.subscribe_requests == 2
    trades = trades_of(items)
    assert source.stats["reconnects"] == 1
    assert {t.trade_id for t in trades} == set(server.trades_sent)
    assert len(server.trades_sent) == SAMPLE_PRINTS
    assert 0 < server.snapshot_trades_sent <= 50
    assert source.stats["snapshot_repeats"] == server.snapshot_trades_sent == 50
    assert len(trades) == SAMPLE_PRINTS + server.snapshot_trades_sent  # repeats are yielded, not dropped
    assert rejects_of(items) == []
    # the snapshot repeats the 50 prints just before the drop (ids 952..1000, 1000 twice)
    first_after_drop = trades[1001 : 1001 + 50]
    assert [t.trade_id for t in first_after_drop][:2] == ["952", "953"]
    assert first_after_drop[-1].trade_id == "1000"


def test_junk_frames_become_rejected_and_valid_trades_still_arrive() -> None:
    huge = json.dumps({"channel": "trade", "type": "update", "data": [], "pad": "z" * 200_000})
    nan_frame = trade_frame(trade_item()).replace("10800.0", "NaN")
    junk = {
        5: ("not json {", "invalid_json"),
        6: ("[1, 2, 3]", "not_an_object"),
        7: (json.dumps({"channel": "book", "type": "update", "data": []}), "unknown_channel:book"),
        8: (trade_frame(trade_item(price="abc")), "bad_type:price"),
        9: (trade_frame(trade_item(price=-1)), "non_positive:price"),
        10: (nan_frame, "non_finite:price"),
        11: (trade_frame(trade_item(price=1e13)), "price_too_large"),
        12: (trade_frame(trade_item(qty=0)), "non_positive:qty"),
        13: (trade_frame(trade_item(price="Infinity")), "bad_type:price"),
        14: (trade_frame(trade_item(side="hold")), "unknown_side:hold"),
        15: (trade_frame(trade_item(timestamp="not-a-time")), "bad_timestamp"),
        16: (trade_frame({k: v for k, v in trade_item().items() if k != "qty"}), "missing_field:qty"),
        17: (huge, "frame_too_large"),
        18: (trade_frame(trade_item("inj-ok", symbol="XBT/USD"), trade_item(side="hold")), "unknown_side:hold"),
        19: (json.dumps({"channel": "trade", "type": "weird", "data": []}), "unknown_trade_type:weird"),
        20: (json.dumps({"channel": "trade", "type": "update", "data": {"a": 1}}), "bad_type:data"),
        21: (json.dumps({"method": "bogus"}), "unknown_method:bogus"),
        22: ("[" * 60_000, "invalid_json"),  # nesting too deep for the JSON parser
    }
    raw_frames = {i: text for i, (text, _) in junk.items()}
    with ReplayServer(raw_frames=raw_frames, close_when_done=True) as server:
        source = KrakenV2Source(["BTC/USD"], server.url, end_on_close=True, max_frame_bytes=100_000)
        items = collect(source)
    rejected = rejects_of(items)
    assert [r.code for r in rejected] == [code for _, code in junk.values()]
    assert all(len(r.raw) <= MAX_RAW_CHARS for r in rejected)
    assert all(r.source == "kraken" for r in rejected)
    too_large = rejected[list(junk).index(17)]
    assert too_large.truncated and too_large.original_length == len(huge)
    assert source.stats["rejected"] == len(junk)
    # every recorded trade plus the one valid item of the mixed frame
    trades = trades_of(items)
    assert len(trades) == SAMPLE_PRINTS + 1
    assert {t.trade_id for t in trades} == {str(n) for n in range(1, SAMPLE_DISTINCT + 1)} | {"inj-ok"}
    injected = next(t for t in trades if t.trade_id == "inj-ok")
    assert injected.symbol == "BTC/USD"
    # rejects sit where they were injected: right before recorded frame 5 (trade_id 6)
    position = items.index(rejected[0])
    assert isinstance(items[position - 1], Trade) and items[position - 1].trade_id == "5"


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"") -> bytes:
    """One WebSocket frame (RFC 6455 5.2), masked with ``mask`` if given."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big") if n < 1 << 16 else \
        bytes([127]) + n.to_bytes(8, "big")
    head += bytes([size[0] | (0x80 if mask else 0)]) + size[1:] + mask
    return head + (bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload)


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of the complete frames a client sent."""
    out, pos = [], 0
    while len(data) - pos >= 6:
        length, head = data[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, head = int.from_bytes(data[head : head + 2], "big"), head + 2
        key, head = data[head : head + 4], head + 4
        if head + length > len(data):
            break
        out.append((data[pos] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data[head : head + length]))))
        pos = head + length
    return out


def serve_raw_websocket(stream: bytes, received: list[bytes]) -> tuple[str, threading.Thread]:
    """A one-connection WebSocket server on a plain socket: handshake, then ``stream`` in small pieces."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}"

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            pieces = [stream[i : i + 7] for i in range(0, 301, 7)]  # headers split across reads too
            pieces += [stream[i : i + 4096] for i in range(len(pieces) * 7, len(stream), 4096)]
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.001 if len(piece) == 7 else 0)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    data += chunk
            received.append(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return url, thread


def test_frames_of_every_size_fragments_pings_and_masks_are_read() -> None:
    sized = [trade_frame(trade_item(str(n), pad="x" * pad)).encode() for n, pad in ((1, 0), (2, 300), (3, 70_000))]
    fragmented = trade_frame(trade_item("4"), trade_item("5")).encode()
    stream = b"".join([
        ws_frame(1, sized[0]),  # 7-bit length
        ws_frame(1, sized[1]),  # 16-bit length
        ws_frame(2, sized[2]),  # 64-bit length, binary
        ws_frame(1, fragmented[:10], fin=False),
        ws_frame(9, b"are you there"),  # a ping between fragments: answered with a pong
        ws_frame(0, fragmented[10:30], fin=False),
        ws_frame(0, fragmented[30:]),
        ws_frame(10, b"unsolicited pong"),  # ignored
        ws_frame(1, trade_frame(trade_item("6")).encode(), mask=b"\x01\x02\x03\x04"),  # servers should not mask
        ws_frame(8, (1000).to_bytes(2, "big") + b"bye"),
    ])
    received: list[bytes] = []
    url, server = serve_raw_websocket(stream, received)
    source = KrakenV2Source(["BTC/USD"], url, end_on_close=True)
    items = collect(source)
    server.join(10)
    assert [t.trade_id for t in trades_of(items)] == ["1", "2", "3", "4", "5", "6"] and rejects_of(items) == []
    assert source.stats["frames"] == 5 and source.stats["reconnects"] == 0
    sent_back = client_frames(received[0])
    assert json.loads(sent_back[0][1])["method"] == "subscribe"
    assert (10, b"are you there") in sent_back  # the pong
    assert sent_back[-1][0] == 8  # the close answered


def test_subscribe_error_ack_is_rejected_and_counted() -> None:
    with ReplayServer(close_when_done=True) as server:
        source = KrakenV2Source(["BTC/USD", "eth/usd"], server.url, end_on_close=True)
        items = collect(source)
    rejected = rejects_of(items)
    assert [r.code for r in rejected] == ["subscribe_error"]
    assert "ETH/USD" in rejected[0].reason
    assert source.stats["subscribe_errors"] == 1
    assert len(trades_of(items)) == SAMPLE_PRINTS


def test_xbt_pairs_are_normalized_on_the_wire(tiny_recording: Path) -> None:
    raw_frames = {2: trade_frame(trade_item("xbt-1", symbol="xbt/usdt"))}
    with ReplayServer(tiny_recording, raw_frames=raw_frames, close_when_done=True) as server:
        source = KrakenV2Source(["XBT/USDT"], server.url, end_on_close=True)
        assert source.pairs == ["BTC/USDT"]
        items = collect(source)
    trades = trades_of(items)
    assert [t.trade_id for t in trades] == ["1", "2", "xbt-1", "3", "4", "5"]
    assert {t.symbol for t in trades} == {"BTC/USDT"}
    assert [r.code for r in rejects_of(items)] == ["invalid_json"]  # the recorded raw line
    assert source.stats["heartbeats"] == 1


def test_speed_keeps_scaled_gaps(tiny_recording: Path) -> None:
    with ReplayServer(tiny_recording, speed=2, close_when_done=True) as server:
        source = KrakenV2Source(["BTC/USDT"], server.url, end_on_close=True)
        started = time.monotonic()
        items = collect(source)
        elapsed = time.monotonic() - started
    # recorded gaps after the first frame: 4 x 200 ms + 300 ms + 100 ms = 1.2 s, at 2x = 0.6 s
    assert 0.55 <= elapsed < 3.0
    assert len(trades_of(items)) == 5


def test_record_then_replay_round_trip(tiny_recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "session.jsonl"
    with ReplayServer(tiny_recording, close_when_done=True) as server:
        source = KrakenV2Source(["BTC/USDT"], server.url, end_on_close=True, record=out)
        first = trades_of(collect(source))
    entries = list(read_recording(out))
    assert len(entries) == source.stats["frames"]
    assert entries[0]["frame"]["channel"] == "status"
    assert [e["raw"] for e in entries if "raw" in e] == ["garbage that is not json"]
    assert all(isinstance(e["recv_ms"], int) for e in entries)
    with ReplayServer(out, close_when_done=True) as server:
        second = trades_of(collect(KrakenV2Source(["BTC/USDT"], server.url, end_on_close=True)))
    assert [(t.trade_id, t.price, t.event_time) for t in second] == [(t.trade_id, t.price, t.event_time) for t in first]


def test_read_recording_reads_the_gzipped_sample() -> None:
    entries = list(read_recording(SAMPLE_RECORDING))
    assert len(entries) == 1 + SAMPLE_DISTINCT
    assert entries[0]["frame"]["channel"] == "status"
    assert entries[1]["frame"]["data"][0]["price"] == 10749.4


def test_idle_connection_sends_pings_and_stays_up(tiny_recording: Path) -> None:
    with ReplayServer(tiny_recording) as server:
        source = KrakenV2Source(["BTC/USDT"], server.url, ping_interval=0.3)
        items = collect(source, until=lambda items: False, timeout=2.5)
        assert server.finished.is_set()
    assert len(trades_of(items)) == 5
    assert server.pings >= 2 and source.stats["pongs"] >= 2
    assert source.stats["heartbeats"] >= 2  # server heartbeats once the recording is exhausted
    assert source.stats["reconnects"] == 0


def test_gives_up_after_max_reconnects_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = KrakenV2Source(["BTC/USD"], f"ws://127.0.0.1:{port}", backoff_initial=0.01, max_reconnects=3)
    started = time.monotonic()
    assert collect(source) == []
    assert source.stats["reconnects"] == 3
    assert source.stats["connected"] is False
    assert time.monotonic() - started < 5


def test_stop_ends_an_idle_stream_quickly(tiny_recording: Path) -> None:
    with ReplayServer(tiny_recording) as server:
        source = KrakenV2Source(["BTC/USDT"], server.url)
        stop = threading.Event()
        stream: Iterator[Trade | Rejected] = source.stream(stop)
        received = [next(stream) for _ in range(5)]
        assert all(isinstance(t, Trade) for t in received)
        stop.set()
        started = time.monotonic()
        rest = list(stream)
        assert time.monotonic() - started < 2
    assert [r.code for r in rest if isinstance(r, Rejected)] in ([], ["invalid_json"])


def test_bad_speed_is_refused() -> None:
    with pytest.raises(ValueError):
        ReplayServer(speed=0)


def test_port_in_use_is_reported() -> None:
    with ReplayServer() as first:
        with pytest.raises(RuntimeError, match="failed to start"):
            ReplayServer(port=first.port).start()
