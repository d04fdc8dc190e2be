"""Extract Spanish-English verse pairs from two SWORD zText Bible modules.

Why: the Reina-Valera 1909 (Spanish) and King James (English) Bibles ship in
Debian (sword-text-sparv, sword-text-kjv), are public domain and share one
verse numbering, so they give a real parallel corpus offline, small parts of
which may be committed as test fixtures.

zText format: `.bzs` holds 12-byte records (offset, compressed size,
uncompressed size; uint32 LE) locating zlib blocks in `.bzz`; `.bzv` holds
10-byte records (block index uint32, offset uint32, length uint16), one per
verse slot, in the same order in every module with the same versification.
Verse text is OSIS XML: we drop `<note>` footnotes and book headings
(`<title type="main">`) with their content, drop every other tag but keep its
text, unescape XML entities, drop the KJV paragraph sign and collapse spaces.
Slots that are empty on either side (chapter and book headers) are skipped,
and so are repeats of an earlier Spanish verse.
"""
from __future__ import annotations

import argparse
import html
import random
import re
import struct
import zlib
from pathlib import Path

from .parallel_io import Pair, die, split_pairs, write_splits

ZTEXT = Path("/usr/share/sword/modules/texts/ztext")
SPANISH, ENGLISH = "spaRV1909eb", "engKJV2006eb"
TESTAMENTS = ("ot", "nt")
DROPPED_WITH_CONTENT = re.compile(r"<note\b.*?</note>|<title\b[^>]*type=\"main\"[^>]*>.*?</title>", re.S)
TAG = re.compile(r"<[^>]*>")


def read_ztext(module: Path, testament: str) -> list[str]:
    """Return the raw OSIS text of every verse slot of one testament ('' for empty slots)."""
    try:
        bzs = (module / f"{testament}.bzs").read_bytes()
        bzv = (module / f"{testament}.bzv").read_bytes()
        bzz = (module / f"{testament}.bzz").read_bytes()
    except FileNotFoundError as err:
        die(f"{err.filename} not found; install the modules with: "
            "apt-get install -y sword-text-kjv sword-text-sparv (or pass --ztext DIR)")
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    cache: dict[int, bytes] = {}
    verses = []
    for pos in range(0, len(bzv), 10):
        block, offset, length = struct.unpack_from("<IIH", bzv, pos)
        if length == 0:
            verses.append("")
            continue
        if block not in cache:
            start, size, _ = blocks[block]
            cache[block] = zlib.decompress(bzz[start:start + size])
        verses.append(cache[block][offset:offset + length].decode("utf-8"))
    return verses


def plain_text(osis: str) -> str:
    """Turn one verse of OSIS markup into plain text."""
    # Tags are removed without a space: they sit inside words ("<w>tha</w>t", "¿<w>Quién</w>").
    text = TAG.sub("", DROPPED_WITH_CONTENT.sub(" ", osis))
    return " ".join(html.unescape(text).replace("\u00b6", " ").split())


def aligned_verses(ztext: Path, src_module: str, tgt_module: str) -> list[Pair]:
    """Pair verses of two modules slot by slot, skipping slots empty on either side.

    Repeated source verses (refrains such as "And the word of the LORD came unto
    me") are kept once, so that no test sentence also appears in train.
    """
    pairs = []
    seen: set[str] = set()
    for testament in TESTAMENTS:
        src = read_ztext(ztext / src_module, testament)
        tgt = read_ztext(ztext / tgt_module, testament)
        if len(src) != len(tgt):
            die(f"{src_module} and {tgt_module} have different verse slot counts in {testament}; "
                "they must share a versification")
        for s, t in zip(src, tgt):
            s, t = plain_text(s), plain_text(t)
            if s and t and s not in seen:
                seen.add(s)
                pairs.append((s, t))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Extract Spanish-English verse pairs (Reina-Valera 1909 / King James) from\n"
                    "SWORD zText modules into OUTDIR/{train,valid,test}.{es,en}, aligned line by line.",
        epilog="example (makes the committed fixture):\n"
               "  .venv/bin/python scripts/nmt_data/extract_bible.py tests/fixtures/bible_es_en \\\n"
               "      --max-words 20 --count 420 --valid 60 --test 60 --seed 1")
    parser.add_argument("outdir", type=Path, help="folder to write the six text files into")
    parser.add_argument("--ztext", type=Path, default=ZTEXT,
                        help=f"folder holding the module folders (default: {ZTEXT})")
    parser.add_argument("--max-words", type=int, default=None,
                        help="keep only verses with at most N words on both sides (default: no limit)")
    parser.add_argument("--count", type=int, default=None,
                        help="take K pairs by a seeded random sample, kept in Bible order (default: all)")
    parser.add_argument("--valid", type=int, default=1000, help="valid pairs (default: 1000)")
    parser.add_argument("--test", type=int, default=1000, help="test pairs (default: 1000)")
    parser.add_argument("--seed", type=int, default=1, help="sampling and split seed (default: 1)")
    args = parser.parse_args()

    pairs = aligned_verses(args.ztext, SPANISH, ENGLISH)
    print(f"aligned {len(pairs)} verse pairs (non-empty, distinct Spanish)")
    if args.max_words is not None:
        pairs = [p for p in pairs if max(len(p[0].split()), len(p[1].split())) <= args.max_words]
        print(f"{len(pairs)} pairs with <= {args.max_words} words a side")
    if args.count is not None:
        if args.count > len(pairs):
            die(f"--count {args.count} exceeds the {len(pairs)} available pairs; lower it")
        keep = sorted(random.Random(args.seed).sample(range(len(pairs)), args.count))
        pairs = [pairs[i] for i in keep]
    splits = split_pairs(pairs, args.valid, args.test, args.seed, keep_order=True)
    write_splits(args.outdir, splits, "es", "en")
    print(" ".join(f"{name}={len(split)}" for name, split in splits.items()) + f" -> {args.outdir}")


if __name__ == "__main__":
    main()
