"""``lakehouse reset``: delete the checkpoints, every table and the reports (and the broker's data if asked).

It stops the embedded broker before deleting its data, so it sits with the commands rather than with the jobs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config import Settings
from ..kafka.broker import LocalKafka


def reset_targets(settings: Settings, broker: bool = False) -> list[Path]:
    """What ``lakehouse reset`` deletes: checkpoints, every table, reports (and the broker data if asked)."""
    paths = [settings.checkpoints, settings.bronze, settings.silver, settings.quarantine, settings.gold,
             settings.reports]
    if broker:
        paths.append(settings.broker_dir)
    return [p for p in paths if p.exists()]


def reset(settings: Settings, broker: bool = False) -> list[Path]:
    if broker:
        LocalKafka(settings.broker_dir).stop()
    targets = reset_targets(settings, broker)
    for path in targets:
        shutil.rmtree(path)
        if path.parent != settings.data_dir and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()  # data/bronze, data/silver once their tables are gone
    return targets
