"""One Settings object: paths, bootstrap, Kafka security, topic, triggers, watermark, bind address.

Precedence: defaults < ``LAKEHOUSE_*`` environment variables < explicit arguments (CLI flags).
Every path derives from ``data_dir`` unless set on its own, so one ``--data-dir`` moves everything.
Kafka security (``kafka_*``) may also come from a properties file (``kafka_properties``), below every
``LAKEHOUSE_KAFKA_*`` variable; ``lakehouse_utils.kafka.kafka_conf`` turns it into client configurations.
Passwords are :class:`Secret`: masked in ``repr``/``str``, revealed only where a client is configured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "LAKEHOUSE_"
# Gold timeframes: name -> seconds (one table per timeframe: <gold>/bars_<name>)
TIMEFRAMES: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600}


class Secret:
    """A password: ``***`` in repr/str/f-strings/logs; ``reveal()`` is the one way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return Secret, (self._value,)


class FlowConflict(RuntimeError):
    """A query would write tables that a query of the other flow (pipeline / layer by layer) has written."""


def table_exists(path: str | Path) -> bool:
    """Is there a Delta table at ``path`` (a ``_delta_log`` folder)?"""
    return (Path(path) / "_delta_log").is_dir()


def commit_file(path: str | Path, version: int) -> Path:
    """The JSON commit of ``version`` in the Delta table at ``path``; its modification time is the version's time
    for time travel (Spark's and delta-rs'), for maintenance's window and for ``views.time_travel``."""
    return Path(path) / "_delta_log" / f"{version:020d}.json"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    bootstrap: str = "127.0.0.1:19092"
    topic: str = "crypto.trades"
    alerts_topic: str = "crypto.alerts"
    partitions: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000
    starting_offsets: str = "earliest"
    trigger: str = "1 second"
    max_offsets_per_trigger: int | None = None
    watermark: str = "2 minutes"
    shuffle_partitions: int = 2
    # how Silver parses Bronze's JSON: "arrow" = the trades our producer writes in Arrow, every other row in Spark
    # by the same rules (layers/arrow_parse.py, ~10x faster to parse); "spark" = every row in Spark
    silver_parse: str = "arrow"
    spark_master: str = "local[*]"
    spark_ui: bool = True
    # where notebooks run their Spark: "shared" = the one engine every kernel uses (`lakehouse engine`, a kernel
    # holds no JVM), "local" = a Spark of the kernel's own (LAKEHOUSE_ENGINE=local); the CLI asks with --engine
    engine: str = "shared"
    # alerts Gold raises on the bars it makes final (layers/gold_alerts.py, README "Alerts"): the rolling window
    # of the z-scores (bars), the z threshold (return_z, volume_z), the close-to-close move in %, the spread
    # between the venues of a symbol in basis points (venue_spread); ``alerts = False`` turns them off
    alerts: bool = True
    alert_window: int = 20
    alert_z: float = 3.0
    alert_move_pct: float = 1.0
    alert_spread_bp: float = 25.0
    # a live chart whose pushes no browser view drew for this long is sent again as a new widget (live_figure)
    chart_stale_after_s: float = 20.0
    # gap fill and backfill over the venues' REST trade history (README "Gap fill and backfill"): a live source
    # that sees trade ids skipped (a reconnect, a jump) fetches them from ``rest_url`` (None: the venue's live API;
    # a replay: a local REST replay server of the same recording) and sends them with the header source=rest;
    # while a fill is pending, a live trade more than ``gap_fill_hold_s`` later than the gap waits for it (Gold's
    # watermark must not pass the gap's trades); ``rest_page_size`` / ``rest_min_interval_s``: None = the venue's
    gap_fill: bool = True
    gap_fill_hold_s: float = 60.0
    rest_url: str | None = None
    rest_page_size: int | None = None
    rest_min_interval_s: float | None = None
    # table maintenance from the live pipeline and Bronze's query (``lakehouse maintain`` on a thread of its own,
    # README "Operations"): every ``maintain_every`` batches (0: never; 300: ~5 min at the 1 s trigger), keeping
    # time travel back ``maintain_retain`` (10m, 1h, 7d). Short by default: a live table adds a version a second and
    # every delta-rs write lists the whole ``_delta_log`` several times (an append: 40 ms at 5 log files, 150-190 ms
    # at 3,862), so the window kept is paid on every batch
    maintain_every: int = 300
    maintain_retain: str = "10m"
    # where the servers the project starts listen (Spark UI/driver, replay server); see README "Operations"
    bind_host: str = "127.0.0.1"
    # Kafka client security (``None`` = not set here: the properties file, then PLAINTEXT defaults apply)
    kafka_properties: Path | None = None
    kafka_security_protocol: str | None = None  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret | None = None
    kafka_ssl_ca_location: Path | None = None  # PEM file of the CA(s) that signed the brokers' certificates
    kafka_ssl_certificate_location: Path | None = None  # client certificate (PEM), for mutual TLS
    kafka_ssl_key_location: Path | None = None  # its private key (PEM, PKCS#8)
    kafka_ssl_key_password: Secret | None = None
    # Optional explicit paths; ``None`` means "under data_dir" (see the properties below).
    bronze_path: Path | None = None
    silver_path: Path | None = None
    quarantine_path: Path | None = None
    gold_path: Path | None = None
    checkpoint_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):  # accept str for every path (Settings(data_dir="/tmp/x"))
            value = getattr(self, f.name)
            if isinstance(value, str) and "Path" in str(f.type):
                object.__setattr__(self, f.name, Path(value).expanduser())
            elif isinstance(value, str) and "Secret" in str(f.type):  # Settings(kafka_sasl_password="...")
                object.__setattr__(self, f.name, Secret(value))
        if self.silver_parse not in ("arrow", "spark"):
            raise ValueError(f"silver_parse: {self.silver_parse!r}; choose arrow or spark")
        if int(self.alert_window) < 2:
            raise ValueError(f"alert_window: {self.alert_window} bars; a z-score needs a window of 2 bars or more")
        for name in ("alert_z", "alert_move_pct", "alert_spread_bp"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name}: {getattr(self, name)!r}; an alert threshold must be a positive number")

    # -- derived paths -------------------------------------------------------------------------
    @property
    def bronze(self) -> Path:
        return self.bronze_path or self.data_dir / "bronze" / "crypto_trades"

    @property
    def silver(self) -> Path:
        return self.silver_path or self.data_dir / "silver" / "trades"

    @property
    def quarantine(self) -> Path:
        return self.quarantine_path or self.silver.parent / "trades_quarantine"

    @property
    def gold(self) -> Path:
        """Folder holding the Gold tables (``bars_1m``, ``bars_5m``, ``bars_1h``, ``alerts``)."""
        return self.gold_path or self.data_dir / "gold"

    def bars_table(self, timeframe: str) -> Path:
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe {timeframe!r}: expected one of {', '.join(TIMEFRAMES)}")
        return self.gold / f"bars_{timeframe}"

    @property
    def late_trades(self) -> Path:
        return self.gold / "late_trades"

    @property
    def alerts_table(self) -> Path:
        return self.gold / "alerts"

    @property
    def tables(self) -> dict[str, Path]:
        """Every Delta table of the data dir by short name: bronze, silver, quarantine, gold_<tf>, late_trades,
        alerts (``lakehouse sql`` and ``lakehouse maintain`` name them so)."""
        return {"bronze": self.bronze, "silver": self.silver, "quarantine": self.quarantine,
                **{f"gold_{tf}": self.bars_table(tf) for tf in TIMEFRAMES},
                "late_trades": self.late_trades, "alerts": self.alerts_table}

    @property
    def broker_port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.data_dir / "checkpoints"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def checkpoint(self, job: str) -> Path:
        return self.checkpoints / job

    @property
    def unfilled_gaps(self) -> Path:
        """The ids gap fill and backfill could not fetch, one JSON line per range (``lakehouse check`` lists them)."""
        return self.checkpoints / "gaps" / "unfilled.jsonl"

    @property
    def backfills(self) -> Path:
        """The cursors of ``lakehouse backfill`` (one JSON file per venue, pair and range)."""
        return self.checkpoints / "backfill"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def reports(self) -> Path:
        return self.data_dir / "reports"

    # -- to and from JSON (the shared engine is told the settings a query runs with) -------------
    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """Every field as JSON values, paths absolute; a password as ``None`` unless ``reveal`` (for a trusted
        local peer only: never for a file or a log line)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = value.reveal() if reveal else None
            elif isinstance(value, Path):
                value = str(value.absolute())
            out[f.name] = value
        for name in ("bronze", "silver", "quarantine", "gold", "checkpoints"):  # derived from data_dir: made absolute
            key = {"bronze": "bronze_path", "silver": "silver_path", "quarantine": "quarantine_path",
                   "gold": "gold_path", "checkpoints": "checkpoint_dir"}[name]
            out[key] = str(getattr(self, name).absolute())
        return out

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Settings:
        """The inverse of :meth:`to_json` (unknown keys are refused, by name)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        values = {k: v for k, v in values.items() if v is not None}
        extra = values.pop("extra", {}) or {}
        return cls().with_(**{k: (str(v) if isinstance(v, (int, float, bool)) and k != "extra" else v)
                              for k, v in values.items()}).with_(extra=dict(extra))

    # -- construction --------------------------------------------------------------------------
    def with_(self, **overrides: Any) -> Settings:
        """A copy with the non-``None`` overrides applied (CLI flags that were not given stay unset)."""
        clean = {k: _coerce(k, v) for k, v in overrides.items() if v is not None}
        return replace(self, **clean)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``LAKEHOUSE_<FIELD>`` variables, then ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in env and f.name != "extra":
                values[f.name] = env[key]
        return cls().with_(**values).with_(**overrides)


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _coerce(name: str, value: Any) -> Any:
    """Strings from the environment or the CLI -> the field's type."""
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = str(kinds.get(name, ""))
    if not isinstance(value, str):
        return Path(value) if "Path" in kind and value is not None else value
    if "Secret" in kind:
        return Secret(value) if value else None
    if "Path" in kind:
        return None if value == "" and "None" in kind else Path(value).expanduser()
    if kind.startswith("int"):
        return None if value == "" else int(value)
    if kind.startswith("float"):
        return None if value == "" and "None" in kind else float(value)
    if kind == "bool":
        if value.lower() not in _BOOL:
            raise ValueError(f"{name}: expected a boolean, got {value!r}")
        return _BOOL[value.lower()]
    return value
