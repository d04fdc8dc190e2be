"""NMT demo: cross-entropy, label smoothing 0.1 and L2T-DLF (`l2t_dynamic`) on
the Ding German-English sentence pairs, a small Transformer and a small LSTM,
the same number of updates for every loss; fairseq-generate + sacrebleu on the
test split; one table (printed, and written to results/nmt_ding.md).

The corpus is extracted at run time from Debian's trans-de-en (GPL: never
committed); as root this script installs the package when it is missing.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DING = Path("/usr/share/trans/de-en")
ARCHS = {
    "transformer": ["--arch", "transformer_iwslt_de_en", "--encoder-layers", "2", "--decoder-layers", "2",
                    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
                    "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4",
                    "--decoder-attention-heads", "4", "--share-all-embeddings", "--dropout", "0.1",
                    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3",
                    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100"],
    "lstm": ["--arch", "lstm", "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "128",
             "--decoder-embed-dim", "128", "--encoder-hidden-size", "128", "--decoder-hidden-size", "128",
             "--decoder-out-embed-dim", "128", "--share-decoder-input-output-embed", "--dropout", "0.1",
             "--optimizer", "adam", "--lr", "2e-3"],
}
LOSSES = {
    "ce": ["--task", "translation", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0"],
    "label_smoothing": ["--task", "translation", "--criterion", "label_smoothed_cross_entropy",
                        "--label-smoothing", "0.1"],
    "l2t_dlf": ["--task", "l2t_translation", "--criterion", "l2t_dynamic", "--teacher-update-interval", "10"],
}


def run(cmd: list[str], log: Path) -> str:
    with log.open("w") as handle:
        done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, text=True)
    text = log.read_text()
    if done.returncode != 0:
        sys.exit(f"error: {Path(cmd[0]).name} failed (see {log}): {text.strip().splitlines()[-1]}")
    return text


def prepare_data(data_bin: Path, vocab: int) -> None:
    if (data_bin / "dict.en.txt").is_file():
        return
    if not DING.is_file():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            sys.exit(f"error: {DING} not found; install it with: apt-get install -y trans-de-en")
        print("installing Debian trans-de-en (the Ding dictionary) ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "trans-de-en"], check=True)
    text = REPO / "data" / "ding-de-en"
    subprocess.run([sys.executable, str(REPO / "scripts/nmt_data/extract_ding.py"), str(text)], check=True)
    subprocess.run([sys.executable, str(REPO / "scripts/nmt_data/binarize.py"), str(text), str(data_bin),
                    "--src", "de", "--tgt", "en", "--vocab-size", str(vocab), "--force"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=400, help="updates for every run (default: %(default)s)")
    parser.add_argument("--archs", nargs="+", choices=sorted(ARCHS), default=["transformer", "lstm"])
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4000, help="joint sentencepiece vocabulary")
    parser.add_argument("--data-bin", default=str(REPO / "data-bin" / "ding-de-en"))
    parser.add_argument("--out", default=str(REPO / "runs" / "nmt_demo"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data_bin, out = Path(args.data_bin), Path(args.out)
    prepare_data(data_bin, args.vocab)
    out.mkdir(parents=True, exist_ok=True)
    demo_started = time.perf_counter()
    rows = []
    for arch in args.archs:
        for loss, loss_args in LOSSES.items():
            save = out / f"{arch}-{loss}"
            shutil.rmtree(save, ignore_errors=True)
            started = time.perf_counter()
            run([str(BIN / "fairseq-train"), str(data_bin), "--user-dir", str(REPO / "fairseq_l2t"), *ARCHS[arch],
                 *loss_args, "--max-tokens", str(args.max_tokens), "--max-update", str(args.updates), "--cpu",
                 "--seed", str(args.seed), "--save-dir", str(save), "--no-epoch-checkpoints", "--disable-validation",
                 "--log-interval", "50", "--no-progress-bar", "--num-workers", "0"], save.with_suffix(".train.log"))
            minutes = (time.perf_counter() - started) / 60
            generated = run([str(BIN / "fairseq-generate"), str(data_bin), "--user-dir", str(REPO / "fairseq_l2t"),
                             "--path", str(save / "checkpoint_last.pt"), "--cpu", "--beam", str(args.beam),
                             "--batch-size", "200", "--max-len-a", "1.5", "--max-len-b", "5", "--scoring",
                             "sacrebleu", "--remove-bpe", "sentencepiece"],
                            save.with_suffix(".generate.log"))
            bleu = float(re.search(r"BLEU = ([\d.]+)", generated).group(1))
            rows.append((arch, loss, bleu, minutes))
            print(f"{arch:12s} {loss:16s} test BLEU {bleu:6.2f}   ({minutes:.1f} min training)", flush=True)
    ce = {arch: bleu for arch, loss, bleu, _ in rows if loss == "ce"}
    lines = [f"| model | loss | test BLEU (sacrebleu) | vs CE | training minutes ({args.updates} updates) |",
             "|---|---|---|---|---|"]
    for arch, loss, bleu, minutes in rows:
        delta = f"{bleu - ce[arch]:+.2f}" if loss != "ce" else ""
        lines.append(f"| {arch} | {loss} | {bleu:.2f} | {delta} | {minutes:.1f} |")
    table = "\n".join(lines)
    total_minutes = (time.perf_counter() - demo_started) / 60
    results = REPO / "results" / "nmt_ding.md"
    results.parent.mkdir(exist_ok=True)
    results.write_text(table + f"\n\nDing de-en (train 16,025 / valid 1,000 / test 1,000 pairs), joint "
                       f"sentencepiece {args.vocab}, {args.updates} updates of <= {args.max_tokens} tokens, "
                       f"beam {args.beam}, seed {args.seed}, {os.cpu_count()} CPU cores; whole demo (training, "
                       f"decoding and scoring) {total_minutes:.1f} min.\nCommand: python scripts/nmt_demo.py "
                       f"--updates {args.updates} --max-tokens {args.max_tokens} --beam {args.beam}\n")
    print("\n" + table + f"\n\nwhole demo: {total_minutes:.1f} min")


if __name__ == "__main__":
    main()
