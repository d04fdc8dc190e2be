"""Helpers shared by the extractors: seeded train/valid/test splits and atomic writes.

Both extractors must split the same way and must never leave half-written
files behind (a crash mid-write would otherwise look like a small corpus).
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import NoReturn

Pair = tuple[str, str]
SPLITS = ("train", "valid", "test")


def die(message: str) -> NoReturn:
    """Print one line naming the problem and its fix, then exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def split_pairs(pairs: list[Pair], n_valid: int, n_test: int, seed: int,
                max_train: int | None = None, keep_order: bool = False) -> dict[str, list[Pair]]:
    """Shuffle with `seed`, take valid then test, the rest is train (capped at max_train).

    With keep_order each split keeps the input order (used for Bible order).
    """
    if n_valid < 0 or n_test < 0:
        die("--valid and --test must be >= 0")
    if len(pairs) <= n_valid + n_test:
        die(f"only {len(pairs)} pairs, not enough for {n_valid} valid + {n_test} test + some train; "
            "lower --valid/--test")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    chosen = {
        "valid": order[:n_valid],
        "test": order[n_valid:n_valid + n_test],
        "train": order[n_valid + n_test:][:max_train],
    }
    if keep_order:
        chosen = {name: sorted(idx) for name, idx in chosen.items()}
    return {name: [pairs[i] for i in chosen[name]] for name in SPLITS}


def write_splits(outdir: Path, splits: dict[str, list[Pair]], src: str, tgt: str) -> None:
    """Write OUTDIR/{split}.{src,tgt}, one sentence per line, all-or-nothing."""
    outdir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name in SPLITS:
            for side, lang in enumerate((src, tgt)):
                final = outdir / f"{name}.{lang}"
                tmp = outdir / f".{final.name}.tmp{os.getpid()}"
                staged.append((tmp, final))
                with tmp.open("w", encoding="utf-8") as f:
                    f.writelines(pair[side] + "\n" for pair in splits[name])
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
