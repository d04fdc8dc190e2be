"""How much of a BLEU difference in the NMT table is the choice of sentences.

Two seeds give no interval across seeds, so for every run of the NMT table (scripts/nmt_demo.py)
and each split this pairs the run with cross-entropy, label smoothing 0.1 and
the label smoothing tuned on valid (where the table has a grid) of the same
model and seed, and resamples the split's sentences (paired bootstrap,
Koehn 2004: the same resampled sentences for both systems): the BLEU difference,
its 95 % interval and the share of resamples in which the run is ahead. It reads
the decoded output that the table left in each run's folder (valid.log and
test.log from fairseq-generate), so it trains and decodes nothing. Written to
results/nmt_ding_bootstrap.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sacrebleu.metrics import BLEU

from .table import decoded, tuned_smoothing  # the reader of the table's decoded logs, its tuned-LS choice

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("valid", "test")
BASES = ("ce", "label_smoothing")


def paired_bootstrap(refs: list[str], run: list[str], base: list[str], samples: int, seed: int) -> dict:
    """BLEU(run) - BLEU(base) on the whole split, its 95 % percentile interval over `samples` resamples of the
    sentences, and the share of resamples where run is ahead. The metric is fairseq-generate's (sacrebleu, 13a)."""
    bleu = BLEU()
    stats = [np.array(bleu._extract_corpus_statistics(hyps, [refs]), dtype=np.float64) for hyps in (run, base)]

    def score(rows: np.ndarray) -> float:
        return bleu._compute_score_from_stats(rows.sum(0).tolist()).score

    index = np.random.default_rng(seed).integers(0, len(refs), size=(samples, len(refs)))
    gaps = np.array([score(stats[0][i]) - score(stats[1][i]) for i in index])
    low, high = np.percentile(gaps, [2.5, 97.5])
    return {"difference": score(stats[0]) - score(stats[1]), "interval_95": [float(low), float(high)],
            "share_ahead": float((gaps > 0).mean())}


def compare(runs: Path, samples: int, seed: int) -> list[dict]:
    """One entry per (run, split, base) for every finished run but CE and each base of the same model and seed:
    CE, label smoothing 0.1 and, where the table tuned it on valid, the tuned epsilon."""
    finished, rows = {}, []
    for row_file in sorted(runs.glob("*/row.json")):
        rows.append(json.loads(row_file.read_text()))
        finished[(rows[-1]["model"], rows[-1]["loss"], rows[-1]["protocol"], rows[-1]["seed"])] = row_file.parent
    tuned = tuned_smoothing(rows)
    entries = []
    for (model, loss, protocol, run_seed), folder in finished.items():
        for base in dict.fromkeys([*BASES, tuned.get(model, BASES[0])]):
            base_folder = finished.get((model, base, "fixed", run_seed))
            if loss == "ce" or loss == base or base_folder is None:  # CE against LS is LS against CE, negated
                continue
            for split in SPLITS:
                refs, run = decoded(folder / f"{split}.log")
                base_refs, base_hyps = decoded(base_folder / f"{split}.log")
                if refs != base_refs:
                    raise SystemExit(f"error: {folder} and {base_folder} decoded different {split} references")
                entries.append({"model": model, "loss": loss, "protocol": protocol, "seed": run_seed,
                                "split": split, "base": base,
                                **paired_bootstrap(refs, run, base_hyps, samples, seed)})
    return entries


def markdown(entries: list[dict], samples: int) -> str:
    lines = ["| model | loss | protocol | seed | split | vs | BLEU difference | 95 % interval | resamples ahead |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        low, high = e["interval_95"]
        lines.append(f"| {e['model']} | {e['loss']} | {e['protocol']} | {e['seed']} | {e['split']} | {e['base']} | "
                     f"{e['difference']:+.2f} | [{low:+.2f}, {high:+.2f}] | {100 * e['share_ahead']:.0f} % |")
    return "\n".join(lines) + (
        f"\n\nPaired bootstrap over the split's 1,000 sentences ({samples} resamples, the same sentences for both "
        f"systems): what the choice of sentences alone moves. It says nothing of the seed-to-seed spread, "
        f"which the table's two seeds show.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "nmt_ding",
                        help="the NMT table (scripts/nmt_demo.py)'s run folders (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "nmt_ding_bootstrap",
                        help="writes OUT.json and OUT.md (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the resampling (default: %(default)s)")
    args = parser.parse_args()
    if not args.runs.is_dir():
        parser.error(f"--runs {args.runs} is not a folder (run the NMT table (scripts/nmt_demo.py) first)")
    entries = compare(args.runs, args.samples, args.seed)
    if not entries:
        raise SystemExit(f"error: no finished run in {args.runs} has a CE or label-smoothing run of its seed")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"samples": args.samples, "seed": args.seed,
                                                         "comparisons": entries}, indent=1) + "\n")
    text = markdown(entries, args.samples)
    args.out.with_suffix(".md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
