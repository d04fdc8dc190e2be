"""One CLI run per folder, resumable: what every table is made of."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def run_cli(main: Callable[[list[str]], dict], argv: list[str], out: Path, reuse: bool) -> dict:
    """Run a CLI's main into `out`, or with `reuse`, read the summary of a finished run there."""
    if reuse and (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    return main(argv + ["--out", str(out)])
