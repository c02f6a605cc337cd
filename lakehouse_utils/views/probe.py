"""Is there anything new in Gold?  A few file probes per look, no table read: what the live views poll.

:class:`TableVersions` remembers each Delta table's version seen last and, on the next look, probes only the
commit files after it (``_delta_log/<version+1>.json`` ...).  A table that was made anew (``lakehouse reset``:
the version seen last is gone from its log) is looked at from its start again.  The live candle chart and the
venues view both call :meth:`TableVersions.look` every half second and read Gold only when it answers something
else than the last time.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..config import commit_file


class TableVersions:
    """The newest versions of Delta tables, each table followed from the version seen last (-1: none yet)."""

    def __init__(self) -> None:
        self._known: dict[Path, int] = {}

    def look(self, tables: Iterable[Path]) -> tuple[int, ...]:
        """The newest version of each table (-1 while a table has no commit), in the order given."""
        from ..layers.follow import latest_version

        out = []
        for table in tables:  # per table: a timeframe picked later starts from its own version
            known = self._known.get(table, -1)
            if known >= 0 and not commit_file(table, known).exists():
                known = -1  # the table was made anew (lakehouse reset): look from its start
            self._known[table] = latest_version(table, known)
            out.append(self._known[table])
        return tuple(out)


__all__ = ["TableVersions"]
