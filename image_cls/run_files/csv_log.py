"""The CSV logs of a run (one row per evaluation or episode): what the result scripts and plots read."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


class CsvLog:
    """Rows appended to a CSV file, flushed per row so a crash loses nothing.

    The file starts afresh with `rows` (a resumed run's rows up to its
    checkpoint), so rows logged after the checkpoint by a killed run never
    appear twice.
    """

    def __init__(self, path: str | Path, rows: Sequence[dict] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fields: list[str] | None = None
        self.path.unlink(missing_ok=True)
        for row in rows:
            self(row)

    def __call__(self, row: dict) -> None:
        new = self._fields is None
        if new:
            self._fields = list(row)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
