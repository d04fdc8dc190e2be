"""Extract German-English sentence pairs from the Ding dictionary (Debian trans-de-en).

Why: IWSLT'14 De-En needs internet; the Ding dictionary ships about 18k example
sentences (short conversational German with English translations) that make a
real, offline German->English corpus. Ding is GPL, so the extract is made at
run time and must never be committed.

Each dictionary line is `DE :: EN`; both sides split on ` | ` into pieces that
align by position. From each piece we drop `{...}` and `[...]` annotations
(gender, subject field, register) and keep the first `; ` alternative. A pair
is kept when both sides look like sentences: >= 4 words, capitalised first
letter, ending in `.`, `?` or `!`. Duplicates (same German text) are dropped.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from .parallel_io import Pair, die, split_pairs, write_splits

DEFAULT_SOURCE = Path("/usr/share/trans/de-en")
ANNOTATION = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")


def clean_piece(piece: str) -> str:
    """Drop {...}/[...] annotations, keep the first '; ' alternative, normalise spaces."""
    first = ANNOTATION.sub(" ", piece).split("; ")[0]
    return " ".join(first.split())


def is_sentence(text: str) -> bool:
    """True for text that looks like a sentence rather than a headword or phrase."""
    return len(text.split()) >= 4 and text[0].isupper() and text[-1] in ".?!"


def read_pairs(path: Path) -> tuple[list[Pair], dict[str, int]]:
    """Return the deduplicated sentence pairs of a Ding file, in file order, and counts."""
    counts = {"lines": 0, "entries": 0, "misaligned": 0, "duplicates": 0}
    pairs: list[Pair] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for line in f:
            counts["lines"] += 1
            line = line.rstrip("\n")
            if line.startswith("#") or " :: " not in line:
                continue
            counts["entries"] += 1
            de_side, en_side = line.split(" :: ", 1)
            de_pieces, en_pieces = de_side.split(" | "), en_side.split(" | ")
            if len(de_pieces) != len(en_pieces):
                counts["misaligned"] += 1
                continue
            for de_piece, en_piece in zip(de_pieces, en_pieces):
                de, en = clean_piece(de_piece), clean_piece(en_piece)
                if not (is_sentence(de) and is_sentence(en)):
                    continue
                if de in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(de)
                pairs.append((de, en))
    return pairs, counts


def main() -> None:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Extract German-English sentence pairs from the Ding dictionary into\n"
                    "OUTDIR/{train,valid,test}.{de,en} (one sentence per line, aligned).\n"
                    "Ding is GPL: do not commit the output.",
        epilog="example:\n  .venv/bin/python scripts/nmt_data/extract_ding.py data/ding-de-en")
    parser.add_argument("outdir", type=Path, help="folder to write the six text files into")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"Ding dictionary file (default: {DEFAULT_SOURCE})")
    parser.add_argument("--valid", type=int, default=1000, help="valid pairs (default: 1000)")
    parser.add_argument("--test", type=int, default=1000, help="test pairs (default: 1000)")
    parser.add_argument("--max-train", type=int, default=None,
                        help="cap on train pairs (default: all the rest)")
    parser.add_argument("--seed", type=int, default=1, help="shuffle seed (default: 1)")
    args = parser.parse_args()

    if not args.source.is_file():
        die(f"{args.source} not found; install it with: apt-get install -y trans-de-en "
            "(or pass --source FILE)")
    pairs, counts = read_pairs(args.source)
    splits = split_pairs(pairs, args.valid, args.test, args.seed, args.max_train)
    write_splits(args.outdir, splits, "de", "en")
    print(f"read {counts['lines']} lines ({counts['entries']} entries, "
          f"{counts['misaligned']} skipped with unequal piece counts)")
    print(f"kept {len(pairs)} sentence pairs ({counts['duplicates']} duplicate German sentences dropped)")
    print(" ".join(f"{name}={len(split)}" for name, split in splits.items()) + f" -> {args.outdir}")


if __name__ == "__main__":
    main()
