"""``lakehouse ingest`` logic (lakehouse_utils.ops.ingest) through argparse, against the real broker."""

from __future__ import annotations

import argparse
import io
import re
import socket
import time
from pathlib import Path

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.topics import end_offsets, last_messages
from lakehouse_utils.ops import ingest

from .test_producer import read_topic


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lakehouse ingest")
    ingest.add_arguments(parser)
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    return parser.parse_args(argv)


def run(argv: list[str], tmp_path: Path) -> tuple[int, str, Settings]:
    args = parse(argv)
    settings = Settings(data_dir=tmp_path / "data", bootstrap=args.bootstrap, topic=args.topic)
    out = io.StringIO()
    code = ingest.run(args, settings, out=out)
    return code, out.getvalue(), settings


def counter(text: str, name: str) -> int:
    match = re.search(rf"^  {name}\s+([\d,]+)", text, re.MULTILINE)
    assert match, f"no {name!r} in:\n{text}"
    return int(match.group(1).replace(",", ""))


def test_replay_at_max_speed(kafka: LocalKafka, topic: str, tmp_path: Path) -> None:
    code, text, settings = run(["--source", "replay", "--speed", "max", "--bootstrap", kafka.bootstrap,
                                "--topic", topic], tmp_path)
    assert code == 0, text
    assert "ingest finished (source ended): source=replay" in text
    for name in ("received", "sent", "delivered"):
        assert counter(text, name) == 2672
    assert counter(text, "rejected") == 0 and counter(text, "delivery errors") == 0
    assert re.search(r"^  duration\s+[\d.]+ s", text, re.MULTILINE)
    assert "[finished] replay: received=2672 sent=2672 delivered=2672" in text  # the last progress line
    assert end_offsets(kafka.bootstrap, settings.topic) == {0: 2672}
    assert end_offsets(kafka.bootstrap, settings.dlq_topic) == {0: 0}


def test_xbt_pair_is_normalized_and_n_trades_bounds_synthetic(kafka: LocalKafka, topic: str,
                                                             tmp_path: Path) -> None:
    code, text, settings = run(["--source", "synthetic", "--pair", "XBT/USDT", "--n-trades", "100",
                                "--bootstrap", kafka.bootstrap, "--topic", topic], tmp_path)
    assert code == 0, text
    assert "ingest synthetic BTC/USDT" in text
    assert counter(text, "delivered") == 100
    records = read_topic(kafka.bootstrap, settings.topic)
    assert len(records) == 100 and {r.key for r in records} == {"synthetic|BTC/USDT"}
    assert [r.value["trade_id"] for r in records] == [str(n) for n in range(1, 101)]
    assert {r.headers["source"] for r in records} == {"synthetic"}


def test_defaults_and_repeatable_pairs() -> None:
    args = parse([])
    assert (args.source, args.pairs, args.speed, args.duration, args.seed) == ("replay", None, "max", None, 42)
    args = parse(["--pair", "BTC/USD", "--pair", "eth/usd", "--speed", "10", "--duration", "2.5"])
    assert args.pairs == ["BTC/USD", "eth/usd"] and args.speed == "10" and args.duration == 2.5


def test_duration_bounds_a_paced_run(kafka: LocalKafka, topic: str, tmp_path: Path) -> None:
    code, text, settings = run(["--source", "synthetic", "--pair", "SOL/USD", "--pair", "ETH/USD", "--speed", "2",
                                "--duration", "1.5", "--bootstrap", kafka.bootstrap, "--topic", topic], tmp_path)
    assert code == 0, text
    assert "(duration)" in text
    delivered = counter(text, "delivered")
    assert 100 <= delivered <= 300  # 100 trades/s for ~1.5 s
    assert end_offsets(kafka.bootstrap, settings.topic) == {0: delivered}
    assert {m.key for m in last_messages(kafka.bootstrap, settings.topic, 50)} == {"synthetic|SOL/USD",
                                                                                  "synthetic|ETH/USD"}


def test_unreachable_broker_fails_fast(tmp_path: Path, capfd) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = parse(["--source", "synthetic", "--n-trades", "5", "--bootstrap", f"127.0.0.1:{port}", "--topic", "x"])
    args.connect_timeout = 2.0
    out = io.StringIO()
    started = time.monotonic()
    code = ingest.run(args, Settings(data_dir=tmp_path, bootstrap=args.bootstrap, topic=args.topic), out=out)
    assert code == 2 and time.monotonic() - started < 15
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in out.getvalue()
    assert "Connect to" not in capfd.readouterr().err  # the clear message alone, no librdkafka log flood


CTRL_C_SCRIPT = """
import argparse, sys
from lakehouse_utils.ops import ingest
from lakehouse_utils.config import Settings
p = argparse.ArgumentParser()
ingest.add_arguments(p)
p.add_argument("--bootstrap")
p.add_argument("--topic")
args = p.parse_args(sys.argv[1:])
sys.exit(ingest.run(args, Settings(data_dir=".", bootstrap=args.bootstrap, topic=args.topic)))
"""


def test_ctrl_c_stops_cleanly(kafka: LocalKafka, topic: str, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, "--source", "synthetic", "--speed", "2",
         "--bootstrap", kafka.bootstrap, "--topic", topic],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("ingest synthetic BTC/USD"), first + (proc.stderr.read() if proc.poll() else "")
        deadline = time.monotonic() + 30
        while end_offsets(kafka.bootstrap, topic)[0] < 50:  # it is producing: interrupt it
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "ingest stopped (stopped): source=synthetic" in out
    delivered = counter(out, "delivered")
    assert delivered >= 50 and counter(out, "sent") == delivered and counter(out, "delivery errors") == 0
    assert end_offsets(kafka.bootstrap, topic) == {0: delivered}  # everything accepted was flushed
