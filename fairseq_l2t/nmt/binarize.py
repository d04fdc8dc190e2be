"""Turn a plain-text parallel corpus into a fairseq data-bin folder.

Why: the offline corpora (extract_ding.py, extract_bible.py) are plain
sentences; fairseq needs subword units and binary files. One sentencepiece
model is learned on both sides of train (so the dictionary can be joined),
every split is encoded with it, and fairseq-preprocess --joined-dictionary
binarizes the result. The sentencepiece model is kept in DESTDIR/spm.model to
detokenise generated output (fairseq-generate ... --bpe sentencepiece
--sentencepiece-model DESTDIR/spm.model).

The vocabulary size is a soft limit (sentencepiece hard_vocab_limit=false), so
tiny corpora such as tests/fixtures/bible_es_en get as many pieces as their
text supports instead of an error.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

from .parallel_io import SPLITS, die

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"


def import_sentencepiece() -> ModuleType:
    """Import sentencepiece, or stop with the fix."""
    try:
        import sentencepiece
    except ImportError:
        die("sentencepiece is not installed; build the venv with: bash scripts/setup_env.sh")
    return sentencepiece


def find_preprocess() -> str:
    """fairseq-preprocess from the repo's venv, else from PATH."""
    venv_tool = VENV / "bin" / "fairseq-preprocess"
    found = str(venv_tool) if venv_tool.exists() else shutil.which("fairseq-preprocess")
    if found is None:
        die("fairseq-preprocess not found; build the venv with: bash scripts/setup_env.sh")
    return found


def binarize(datadir: Path, destdir: Path, src: str, tgt: str, vocab_size: int,
             model_type: str, force: bool) -> None:
    """Train the joint sentencepiece model, encode all splits, run fairseq-preprocess."""
    spm = import_sentencepiece()
    missing = [f"{s}.{lang}" for s in SPLITS for lang in (src, tgt) if not (datadir / f"{s}.{lang}").is_file()]
    if missing:
        die(f"{datadir} lacks {', '.join(missing)}; make it with extract_ding.py or extract_bible.py")
    if destdir.exists() and any(destdir.iterdir()) and not force:
        die(f"{destdir} exists and is not empty; remove it or pass --force")
    preprocess = find_preprocess()

    work = destdir.with_name(f".{destdir.name}.tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        spm.SentencePieceTrainer.train(
            input=[str(datadir / f"train.{src}"), str(datadir / f"train.{tgt}")],
            model_prefix=str(work / "spm"), vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, hard_vocab_limit=False, minloglevel=1)
        model = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
        text = work / "spm-text"
        text.mkdir()
        for split in SPLITS:
            for lang in (src, tgt):
                lines = (datadir / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
                pieces = model.encode(lines, out_type=str)
                (text / f"{split}.{lang}").write_text("".join(" ".join(p) + "\n" for p in pieces),
                                                      encoding="utf-8")
        command = [preprocess, "--source-lang", src, "--target-lang", tgt, "--joined-dictionary",
                   "--workers", "1", "--destdir", ".",
                   *(arg for split in SPLITS for arg in (f"--{split}pref", f"spm-text/{split}"))]
        result = subprocess.run(command, cwd=work)
        if result.returncode != 0:
            die(f"fairseq-preprocess failed (exit {result.returncode}); see its messages above")
        if destdir.exists():
            shutil.rmtree(destdir)
        work.rename(destdir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    words = len((destdir / f"dict.{src}.txt").read_text(encoding="utf-8").splitlines())
    print(f"sentencepiece {model_type}: {model.get_piece_size()} pieces (asked {vocab_size}); "
          f"joined fairseq dictionary: {words} entries -> {destdir}")


def main() -> None:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Binarize DATADIR/{train,valid,test}.{SRC,TGT} for fairseq: one joint\n"
                    "sentencepiece model, then fairseq-preprocess --joined-dictionary into\n"
                    "DESTDIR, which also gets spm.model and the encoded text in spm-text/.",
        epilog="examples:\n"
               "  .venv/bin/python scripts/nmt_data/binarize.py data/ding-de-en data-bin/ding-de-en --src de --tgt en\n"
               "  .venv/bin/python scripts/nmt_data/binarize.py tests/fixtures/bible_es_en data-bin/bible-es-en \\\n"
               "      --src es --tgt en --vocab-size 500")
    parser.add_argument("datadir", type=Path, help="folder with the plain-text splits")
    parser.add_argument("destdir", type=Path, help="fairseq data-bin folder to write")
    parser.add_argument("--src", required=True, help="source language suffix, e.g. de or es")
    parser.add_argument("--tgt", required=True, help="target language suffix, e.g. en")
    parser.add_argument("--vocab-size", type=int, default=2000,
                        help="sentencepiece vocabulary size, a soft limit (default: 2000)")
    parser.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram",
                        help="sentencepiece model type (default: unigram)")
    parser.add_argument("--force", action="store_true", help="replace an existing DESTDIR")
    args = parser.parse_args()
    binarize(args.datadir, args.destdir, args.src, args.tgt, args.vocab_size, args.model_type, args.force)


if __name__ == "__main__":
    main()
