"""`lakehouse maintain` (layers/maintenance.py): what it deletes and what it keeps, on real Delta tables
(delta-rs), with the commits' ages set on their log files (Delta's commit time). Beside a running demo:
tests/test_pipeline.py's kill -9 restart runs with maintenance on another thread."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse_utils.config import Settings
from lakehouse_utils.layers.follow import STATE, added_files
from lakehouse_utils.layers.maintenance import maintain, maintain_table, version_at
from lakehouse_utils.layers.streaming import LAYER_CHECKPOINTS
from lakehouse_utils.ops.cli import main
from lakehouse_utils.views.sql import SqlError
from lakehouse_utils.views.time_travel import bars_at, history


def build(path: Path, batches: int = 60, every: int = 10, age_s: float = 3600.0) -> float:
    """``batches`` appends of one row, a compaction after every ``every``; commit i made ``age_s`` - i*step ago."""
    for i in range(batches):
        write_deltalake(str(path), pa.table({"i": [i]}), mode="append")
        if i % every == every - 1:
            DeltaTable(str(path)).optimize.compact()
    latest = DeltaTable(str(path)).version()
    now = time.time()
    for file in path.glob("*.parquet"):  # the data as old as the log
        os.utime(file, (now - age_s, now - age_s))
    step = age_s / (latest + 1)
    for v in range(latest + 1):
        t = now - age_s + v * step
        os.utime(path / "_delta_log" / f"{v:020d}.json", (t, t))
    return now


def files_of(path: Path, version: int) -> set[str]:
    dt = DeltaTable(str(path), version=version)
    return {Path(u).name for u in dt.file_uris()}


def on_disk(path: Path) -> set[str]:
    return {p.name for p in path.glob("*.parquet")}


def test_vacuum_keeps_every_file_of_the_window_and_only_those(tmp_path: Path) -> None:
    table = tmp_path / "t"
    now = build(table)
    latest = DeltaTable(str(table)).version()
    DeltaTable(str(table)).create_checkpoint()  # what was removed before a log checkpoint is found too
    (table / "part-uncommitted-being-written.parquet").write_bytes(b"not committed yet")
    before = on_disk(table)
    report = maintain_table("t", table, retain_s=20 * 60, now=now)
    k0 = version_at(table, now - 20 * 60, latest)
    assert report.kept_from == k0 and 0 < k0 < latest and report.held_by is None
    kept = on_disk(table)
    needed = set().union(*(files_of(table, v) for v in range(k0, report.version + 1)))
    assert needed <= kept  # time travel within the window reads every version
    assert "part-uncommitted-being-written.parquet" in kept  # never a file the log does not remove
    gone = before - kept
    assert report.vacuumed == len(gone) > 0 and report.bytes_freed > 0
    assert not gone & needed and all(not (table / name).exists() for name in gone)
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == 60  # the table itself: every row
    assert DeltaTable(str(table), version=k0).to_pyarrow_table().num_rows > 0
    assert report.checkpoint and list((table / "_delta_log").glob("*.checkpoint.parquet"))
    again = maintain_table("t", table, retain_s=20 * 60, now=now)  # nothing left to delete
    assert again.vacuumed == 0


def test_a_window_of_many_commits_is_vacuumed_exactly_and_past_the_bound_by_whole_hours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The soak's case: a commit every few seconds, 10 minutes kept. 240 commits over half an hour, the window's
    ~80: each file of a version in it is kept, the older ones go (by whole hours, rounded up to one, none would:
    the soak's files on disk grew all along). Past EXACT_VERSIONS, whole hours again: it keeps more, never less."""
    from lakehouse_utils.layers import maintenance

    table = tmp_path / "t"
    now = build(table, batches=240, every=10, age_s=1800.0)
    latest = DeltaTable(str(table)).version()
    k0 = version_at(table, now - 10 * 60, latest)
    needed = set().union(*(files_of(table, v) for v in range(k0, latest + 1)))
    before = on_disk(table)
    monkeypatch.setattr(maintenance, "EXACT_VERSIONS", latest - k0 - 1)
    hours = maintain_table("t", table, retain_s=10 * 60, now=now)
    assert hours.kept_from == k0 and hours.vacuumed == 0 and on_disk(table) == before  # all within the hour
    monkeypatch.undo()
    report = maintain_table("t", table, retain_s=10 * 60, now=now)
    assert report.kept_from == k0 and latest - k0 > 60
    kept = on_disk(table)
    assert needed <= kept and report.vacuumed == len(before - kept) > 150  # 240 appends, 24 compactions
    assert kept - needed <= {Path(u).name for u in DeltaTable(str(table)).file_uris()}  # nothing else left
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == 240
    assert DeltaTable(str(table), version=k0).to_pyarrow_table().num_rows == (k0 + 1) - (k0 + 1) // 11  # k0 read whole

    # the log: every entry before the newest checkpoint at or before k0 is gone, every version from k0 on reads
    log_dir = table / "_delta_log"
    checkpoints = sorted(int(f.name[:20]) for f in log_dir.glob("*.checkpoint.parquet"))
    base = max(v for v in checkpoints if v <= k0)
    left = {int(f.name.lstrip(".")[:20]) for f in log_dir.iterdir() if f.name.lstrip(".")[:20].isdigit()}
    assert base > 0 and min(left) == base and hours.logs_removed + report.logs_removed >= base  # a JSON each at least
    assert [c.version for c in history(table)] == list(range(base, latest + 1))
    for v in (k0, (k0 + latest) // 2, latest):
        assert DeltaTable(str(table), version=v).to_pyarrow_table().num_rows == (v + 1) - (v + 1) // 11
    with pytest.raises(Exception):  # noqa: B017 - delta-rs' error for a version whose log is gone
        DeltaTable(str(table), version=base - 1)
    with pytest.raises(SqlError, match=f"keeps versions from {base} .* maintenance pruned the log before it"):
        bars_at(table, as_of=datetime.fromtimestamp(now - 3000, tz=UTC))
    write_deltalake(str(table), pa.table({"i": [10_000]}), mode="append")  # writers go on
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == 241


def test_a_stopped_follower_holds_the_files_it_has_not_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    now = build(settings.bronze)
    latest = DeltaTable(str(settings.bronze)).version()
    done = 12  # Silver stopped long ago, after version 12 of Bronze
    checkpoint = settings.checkpoint(LAYER_CHECKPOINTS[1])
    checkpoint.mkdir(parents=True)
    (checkpoint / STATE).write_text(json.dumps({"batch": 3, "done": done}))
    reports = {r.name: r for r in maintain(settings, retain_s=60)}
    bronze = reports["bronze"]
    assert bronze.kept_from == done + 1 and "silver's follower (version 12 done)" in bronze.held_by
    assert bronze.vacuumed > 0  # what was removed at or before version 13 goes
    for file, _, _ in added_files(settings.bronze, done, latest):  # Silver, started again, finds each of them
        assert file.exists(), file
    assert reports["silver"].line() == "silver: no table yet"
    del now


def test_a_layer_first_started_after_the_log_was_pruned_starts_from_the_table_as_it_is(tmp_path: Path) -> None:
    """Bronze ran past the time-travel window before Silver was ever started (notebook 02 long before 03): its
    first batch is Bronze as it is (compacted files included), each row once; then it follows the new versions."""
    import pyarrow.parquet as pq

    from lakehouse_utils.config import commit_file
    from lakehouse_utils.layers.follow import Follower

    settings = Settings(data_dir=tmp_path / "data")
    build(settings.bronze, batches=120)  # delta-rs checkpoints version 100: the log before it can go
    assert maintain(settings, retain_s=600)[0].kept_from > 100
    assert not commit_file(settings.bronze, 0).exists()  # the log before the window is gone
    taken: list[list[int]] = []

    def follow() -> Follower:
        follower = Follower("silver", settings.bronze, settings.silver, settings.checkpoint(LAYER_CHECKPOINTS[1]),
                            "available-now", lambda files: pa.concat_tables([pq.read_table(f) for f, _, _ in files]),
                            lambda rows, batch, stats: taken.append(sorted(rows.column("i").to_pylist())))
        assert follower.start().awaitTermination(60) and follower.exception() is None, follower.exception()
        return follower

    first = follow()
    assert taken == [list(range(120))] and first.done == DeltaTable(str(settings.bronze)).version()
    for i in (120, 121):
        write_deltalake(str(settings.bronze), pa.table({"i": [i]}), mode="append")
    follow()
    assert taken[1:] == [[120, 121]]


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    build(settings.silver, batches=30)
    assert main(["maintain", "--data-dir", str(settings.data_dir), "--retain", "10m"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[1].startswith("silver: v") and "vacuumed" in out.out
    assert "file(s) deleted" in out.err
    assert main(["maintain", "--data-dir", str(settings.data_dir), "--retain", "soon"]) == 2
    assert "error: --retain" in capsys.readouterr().err
    assert main(["maintain", "--data-dir", str(settings.data_dir), "--table", "gold"]) == 2
    assert "unknown table(s) gold" in capsys.readouterr().err
    assert main(["maintain", "--data-dir", str(settings.data_dir), "--retain", "0s", "--table", "silver"]) == 0
    assert "keeping 60s" in capsys.readouterr().err


def test_the_live_pipeline_maintains_every_n_batches_on_a_thread(tmp_path: Path) -> None:
    from lakehouse_utils.layers.maintenance import maybe_in_background

    settings = Settings(data_dir=tmp_path / "data", maintain_every=5, maintain_retain="10m")
    build(settings.silver, batches=40)
    before = on_disk(settings.silver)
    assert [maybe_in_background(settings, b) for b in (0, 1, 2, 3)] == [None] * 4  # not its batch
    thread = maybe_in_background(settings, 4)
    assert thread is not None
    thread.join(60)
    assert len(on_disk(settings.silver)) < len(before)  # it vacuumed
    assert DeltaTable(str(settings.silver)).to_pyarrow_table().num_rows == 40
    assert maybe_in_background(settings.with_(maintain_every=0), 4) is None  # off


def test_checksums_written_at_once_by_two_threads_never_fail_a_commit(tmp_path: Path) -> None:
    """Maintenance runs on a thread of the pipeline's process and writes the same version's checksum as the batch
    does (the soak: a Gold batch failed on the other thread's rename of a shared temp file, and the query died)."""
    import threading

    from lakehouse_utils.layers.delta_io import write_checksum

    path = tmp_path / "t"
    errors: list[BaseException] = []
    for version in range(12):
        write_deltalake(str(path), pa.table({"v": [version]}), mode="append")
        barrier = threading.Barrier(4)

        def write(barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                write_checksum(DeltaTable(str(path)))
            except BaseException as exc:  # the test reports any
                errors.append(exc)

        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        crc = json.loads((path / "_delta_log" / f"{version:020d}.crc").read_text())
        assert crc["numFiles"] == version + 1
    assert errors == []
    assert not list((path / "_delta_log").glob(".*.tmp"))


def test_two_compactions_of_a_table_at_once_never_double_its_rows(tmp_path: Path) -> None:
    """delta-rs commits a compaction whose files another one already removed, without a conflict: the soak found
    Bronze holding every row up to 8 times after the layer's compaction and maintenance's overlapped. Only one
    compaction of a table runs at a time (threads and processes); the other steps aside."""
    import subprocess
    import sys
    import threading

    from lakehouse_utils.layers.delta_io import compact

    path = tmp_path / "t"
    for round_ in range(3):
        for i in range(30):
            write_deltalake(str(path), pa.table({"k": [round_ * 100 + i]}), mode="append")
        barrier = threading.Barrier(3)
        removed: list[int] = []

        def run(barrier: threading.Barrier = barrier, removed: list[int] = removed) -> None:
            barrier.wait()
            removed.append(compact(path, min_files=1))

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        keys = DeltaTable(str(path)).to_pyarrow_table().column("k").to_pylist()
        assert sorted(keys) == sorted(set(keys)) and len(keys) == 30 * (round_ + 1), round_
        assert sum(1 for n in removed if n) == 1 and max(removed) >= 30  # one compacted, the others stepped aside
    # another process holding the table's compaction lock: this one steps aside too
    lock = path / "_delta_log" / ".lakehouse-compact.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        write_deltalake(str(path), pa.table({"k": [999]}), mode="append")
        assert compact(path, min_files=1) == 0
    finally:
        holder.kill()
        holder.wait()
    assert compact(path, min_files=1) == 2
