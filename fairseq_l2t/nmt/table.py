"""NMT results table: cross-entropy, label smoothing 0.1 and L2T-DLF (`l2t_dynamic`)
on the Ding German-English sentence pairs, through fairseq's own CLIs.

Every run gets the same recipe, updates, batches (--max-tokens) and seeds; the
test split is decoded once per finished run (beam 4, sacrebleu). The tuned-LS
baseline of the Transformer is the epsilon of CE (0), 0.1 and --ls-grid with the
best mean valid BLEU. L2T-DLF runs
in two protocols: `online` (the teacher learns from the first update on) and
the paper's `reused` (the teacher trained along the online run of another
seed, loaded with --teacher-init and frozen; `reused_online` keeps updating
it). Rows go to results/nmt_ding.json (one per run) and a table to
results/nmt_ding.md; the online teachers' learned loss (smoothing mass and
scale over updates) to results/nmt_ding_teacher.png.

Resumable: a finished run leaves row.json in its folder and --reuse keeps it;
an unfinished one resumes from its checkpoint_last.pt. So a long table can be
completed over several sittings.  --jobs N trains N runs at a time (a run
that reuses a teacher waits for the online run it reads); with --device cuda
they share one GPU.

The recipe (judged on the valid split only; the README has its valid-BLEU
curve): Transformer 2+2 layers, dim 128, FFN 256, 4 heads, shared embeddings,
dropout 0.2 (attention and activation 0.1), weight decay 1e-4, Adam (0.9,
0.98), lr 1e-3 with inverse_sqrt warm-up 400, 2,000 tokens per update; LSTM:
fairseq's lstm_wiseman_iwslt_de_en (1+1 layers of 256 units, attention) with
shared decoder embeddings, the same optimisation at lr 3e-3, gradients
clipped at norm 1. The corpus is extracted at run
time from Debian's trans-de-en (GPL: never committed); as root this script
installs the package when it is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DING = Path("/usr/share/trans/de-en")
OPTIMISATION = ["--dropout", "0.2", "--weight-decay", "0.0001", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
                "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400"]
ARCHS = {
    "transformer": ["--arch", "transformer_iwslt_de_en", "--encoder-layers", "2", "--decoder-layers", "2",
                    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
                    "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4",
                    "--decoder-attention-heads", "4", "--share-all-embeddings", "--attention-dropout", "0.1",
                    "--activation-dropout", "0.1", *OPTIMISATION, "--lr", "1e-3"],
    # fairseq's IWSLT LSTM; chosen on valid BLEU at 3,000 CE updates: 6.34, against 4.46 for 1+1 layers of 128 with
    # a bidirectional encoder at the same lr and 0.30 for the first recipe (unidirectional 128, lr 1e-3, no clipping)
    "lstm": ["--arch", "lstm_wiseman_iwslt_de_en", "--share-decoder-input-output-embed", *OPTIMISATION,
             "--lr", "3e-3", "--clip-norm", "1.0"],
}
TEACHER = ["--task", "l2t_translation", "--criterion", "l2t_dynamic", "--teacher-smoothing", "0.1"]
# the first is the table's: chosen on valid BLEU (Transformer seed 1, online: smoothing 6.77, soft_target_lowrank 3.69)
TEACHER_STRUCTURES = ("smoothing", "soft_target_lowrank")
PROTOCOLS = ("online", "reused", "reused_online")
CURVE_POINTS = 6  # checkpoints along training whose valid BLEU shows where CE stops improving


def smoothed(epsilon: str) -> list[str]:
    """fairseq's own label-smoothed cross-entropy at `epsilon` (0: CE)."""
    return ["--task", "translation", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", epsilon]


LOSSES = {"ce": smoothed("0"), "label_smoothing": smoothed("0.1"), "l2t_dlf": TEACHER}
TUNED_GRID = "label_smoothing_"  # a Transformer baseline of the --ls-grid: label_smoothing_EPS


def loss_flags(loss: str) -> list[str]:
    """fairseq's task and criterion options of a table loss (label_smoothing_EPS: the tuning grid's)."""
    return smoothed(loss[len(TUNED_GRID):]) if loss.startswith(TUNED_GRID) else list(LOSSES[loss])


def smoothing_of(loss: str) -> float | None:
    """The label-smoothing epsilon of a fixed table loss (CE: 0), None for the teacher."""
    flags = loss_flags(loss)
    return float(flags[flags.index("--label-smoothing") + 1]) if "--label-smoothing" in flags else None


def run(cmd: list[str], log: Path, append: bool = False) -> str:
    with log.open("a" if append else "w") as handle:
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
    subprocess.run([sys.executable, "-m", "fairseq_l2t.nmt.extract_ding", str(text)], check=True)
    subprocess.run([sys.executable, "-m", "fairseq_l2t.nmt.binarize", str(text), str(data_bin),
                    "--src", "de", "--tgt", "en", "--vocab-size", str(vocab), "--force"], check=True)


def repeated_4gram_share(hypotheses: list[str]) -> float:
    """Share of the hypotheses' word 4-grams that repeat an earlier 4-gram of the same hypothesis."""
    total = repeated = 0
    for words in (h.split() for h in hypotheses):
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        total += len(grams)
        repeated += len(grams) - len(set(grams))
    return repeated / total if total else 0.0


def device_flags(device: str) -> list[str]:
    """fairseq's option for the device: it takes a GPU whenever it sees one, unless told --cpu."""
    return ["--cpu"] if device == "cpu" else []


def decode(args, checkpoint: Path, subset: str, log: Path) -> tuple[float, list[str]]:
    """sacrebleu BLEU of `subset` decoded with `checkpoint`, and the detokenised hypotheses."""
    text = run([str(BIN / "fairseq-generate"), str(args.data_bin), "--user-dir", str(REPO / "fairseq_l2t"),
                "--path", str(checkpoint), "--gen-subset", subset, *device_flags(args.device), "--beam",
                str(args.beam), "--batch-size", "200",
                "--max-len-a", "1.5", "--max-len-b", "5", "--scoring", "sacrebleu", "--remove-bpe", "sentencepiece"],
               log)
    return float(re.search(r"BLEU = ([\d.]+)", text).group(1)), decoded(log)[1]


def decoded(log: Path) -> tuple[list[str], list[str]]:
    """References and detokenised hypotheses of a fairseq-generate log, in sentence-id order."""
    text = log.read_text()
    refs = dict(re.findall(r"^T-(\d+)\t(.*)$", text, flags=re.M))
    hyps = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", text, flags=re.M))
    if not hyps or refs.keys() != hyps.keys():
        raise SystemExit(f"error: {log} is not a complete fairseq-generate log (T- and D- lines)")
    ids = sorted(refs, key=int)
    return [refs[i] for i in ids], [hyps[i] for i in ids]


Run = tuple[str, str, str, int]  # (model, loss, protocol, seed)


def run_folder(runs: Path, run: Run) -> Path:
    """Where one run's checkpoints, logs and row.json live."""
    model, loss, protocol, seed = run
    return runs / f"{model}-{loss}-{protocol}-seed{seed}"


def train_run(args, model: str, loss: str, protocol: str, seed: int, runs: Path) -> dict:
    """One fairseq-train run (resumed if a checkpoint is there), decoded on test: one row."""
    save = run_folder(runs, (model, loss, protocol, seed))
    row_file = save / "row.json"
    if args.reuse and row_file.is_file():
        row = json.loads(row_file.read_text())
        if "valid_bleu" not in row:  # a row written before the table had its dev column
            row["valid_bleu"] = final_valid_bleu(args, save)
            row_file.write_text(json.dumps(row, indent=1) + "\n")
        return row
    if not args.reuse:
        shutil.rmtree(save, ignore_errors=True)
    save.mkdir(parents=True, exist_ok=True)
    extra = loss_flags(loss)
    if loss == "l2t_dlf":
        extra += ["--teacher-structure", args.teacher_structure]
        if protocol != "reused":
            extra += ["--teacher-update-interval", str(args.teacher_interval)]
        if protocol.startswith("reused"):
            source = run_folder(runs, needs((model, loss, protocol, seed), args.seeds)) / "checkpoint_last.pt"
            extra += ["--teacher-init", str(source)] + (["--teacher-update-interval", "0"] if protocol == "reused"
                                                        else [])
    interval = max(args.updates // CURVE_POINTS, 1)
    if trained_updates(save / "checkpoint_last.pt") >= args.updates:  # fairseq would take one more update
        log = (save / "train.log").read_text()
    else:
        log = run([str(BIN / "fairseq-train"), str(args.data_bin), "--user-dir", str(REPO / "fairseq_l2t"),
                   *ARCHS[model], *extra, "--max-tokens", str(args.max_tokens), "--max-update", str(args.updates),
                   *device_flags(args.device), "--seed", str(seed), "--save-dir", str(save),
                   "--no-epoch-checkpoints",
                   "--disable-validation", "--save-interval-updates", str(interval), "--keep-interval-updates",
                   str(CURVE_POINTS), "--log-interval", "100", "--no-progress-bar", "--num-workers", "0"],
                  save / "train.log", append=True)
    # fairseq's train_wall of every logged interval, over all the invocations of a resumed run (the log is appended)
    minutes = sum(float(x) for x in re.findall(r"train_inner .*?train_wall=([\d.]+)", log)) / 60
    nll = re.findall(r"(?:train_inner|\| train \|) .*?nll_loss[= ]([\d.]+)", log)  # the last logged, in bits
    bleu, hypotheses = decode(args, save / "checkpoint_last.pt", "test", save / "test.log")
    valid_bleu = final_valid_bleu(args, save)
    row = {"model": model, "loss": loss, "protocol": protocol if loss == "l2t_dlf" else "fixed", "seed": seed,
           "updates": args.updates, "valid_bleu": valid_bleu, "test_bleu": bleu,
           "train_nll": float(nll[-1]) if nll else None,
           "minutes": round(minutes, 1), "repeated_4grams": repeated_4gram_share(hypotheses)}
    if loss == "ce":  # valid BLEU along training (has CE stopped improving?) beside the teacher's reward surrogate
        row["valid_bleu_curve"] = [[updates, valid_bleu if updates == args.updates else  # the final one: decoded
                                    decode(args, path, "valid", save / f"valid_{updates}.log")[0],
                                    expected_bleu_surrogate(path)] for updates, path in interval_checkpoints(save)]
    row_file.write_text(json.dumps(row, indent=1) + "\n")
    return row


def final_valid_bleu(args, save: Path) -> float:
    """Valid BLEU of the run's last checkpoint: the dev side of every choice made on the table."""
    return decode(args, save / "checkpoint_last.pt", "valid", save / "valid.log")[0]


def trained_updates(checkpoint: Path) -> int:
    """The updates a fairseq checkpoint has trained (0 if there is none yet)."""
    if not checkpoint.is_file():
        return 0
    import torch

    import fairseq_l2t.fairseq_plugin.checkpoint_safety  # noqa: F401  (weights-only loading of fairseq files)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["optimizer_history"][-1]["num_updates"])


def expected_bleu_surrogate(checkpoint: Path) -> float:
    """The teacher's reward, expected BLEU (teacher-forced), averaged over the valid split's batches of 32."""
    import torch
    from fairseq import checkpoint_utils

    import fairseq_l2t.fairseq_plugin.checkpoint_safety  # noqa: F401  (weights-only loading of fairseq files)
    from fairseq_l2t.expected_bleu import expected_bleu_dev_objective

    (model,), _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    task.load_dataset("valid")
    objective = expected_bleu_dev_objective(task.target_dictionary.pad(), task.target_dictionary.eos())
    batches = task.get_batch_iterator(task.dataset("valid"), max_sentences=32).next_epoch_itr(shuffle=False)
    model.eval()
    with torch.no_grad():
        values = [1.0 - float(objective(model(**b["net_input"])[0], b["target"])) for b in batches]
    return sum(values) / len(values)


def interval_checkpoints(save: Path) -> list[tuple[int, Path]]:
    """fairseq's checkpoint_EPOCH_UPDATES.pt files of a run, by updates."""
    found = [(int(path.stem.rsplit("_", 1)[1]), path) for path in save.glob("checkpoint_*_*.pt")]
    return sorted(found)


def reused_from(seed: int, seeds: list[int]) -> int:
    """The seed whose online teacher teaches `seed`'s fresh student: the next one in --seeds, cyclically."""
    if len(seeds) < 2:
        sys.exit("error: the reused-teacher protocols need at least two --seeds (a teacher is never reused on the "
                 "student it was trained along)")
    return seeds[(seeds.index(seed) + 1) % len(seeds)]


def plan(args) -> list[tuple[str, str, str, int]]:
    """(model, loss, protocol, seed) of every run: a seed's CE, LS and online teacher together (a table cut
    short is already paired), and online teachers before the runs that reuse them."""
    runs = []
    for model in args.models:
        seeds = args.seeds if model == "transformer" else args.seeds[:1]
        protocols = args.protocols if model == "transformer" else [args.lstm_protocol]
        reused = [p for p in protocols if p != "online"]
        teachers = {seed for seed in seeds if "online" in protocols}
        teachers |= {reused_from(seed, args.seeds) for seed in seeds if reused}
        for seed in args.seeds:
            runs += [(model, loss, "fixed", seed) for loss in ("ce", "label_smoothing") if seed in seeds]
            runs += [(model, "l2t_dlf", "online", seed)] if seed in teachers else []
        runs += [(model, "l2t_dlf", p, seed) for p in reused for seed in seeds]
    # last: the teacher's own runs come first in a table cut short
    runs += [("transformer", f"{TUNED_GRID}{eps:g}", "fixed", seed) for eps in args.ls_grid for seed in args.seeds
             if "transformer" in args.models]
    return runs


def needs(run: Run, seeds: list[int]) -> Run | None:
    """The run whose teacher `run` reads (the other seed's online run), if any."""
    model, loss, protocol, seed = run
    return (model, loss, "online", reused_from(seed, seeds)) if protocol.startswith("reused") else None


def execute(runs: list[Run], seeds: list[int], jobs: int, work: Callable[[Run], dict],
            on_row: Callable[[int, dict], None]) -> None:
    """work(run) for every planned run, at most `jobs` at a time and each only once the run it needs has finished;
    on_row(index in `runs`, row) as each finishes, in the main thread.  A failed run stops the table after the
    runs in flight have finished (they keep their checkpoints)."""
    finished: set[Run] = set()
    waiting = list(enumerate(runs))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        flight: dict[Future, tuple[int, Run]] = {}
        while waiting or flight:
            for item in [item for item in waiting if needs(item[1], seeds) in finished | {None}]:
                if len(flight) == jobs:
                    break
                waiting.remove(item)
                flight[pool.submit(work, item[1])] = item
            if not flight:
                sys.exit(f"error: {waiting[0][1]} needs {needs(waiting[0][1], seeds)}, which is not planned")
            done, _ = wait(flight, return_when=FIRST_COMPLETED)
            for future in done:
                index, run_ = flight.pop(future)
                row = future.result()  # a failed run raises here (SystemExit from run())
                finished.add(run_)
                on_row(index, row)


def table(rows: list[dict], args) -> str:
    lines = ["| model | loss | protocol | seeds | valid BLEU (mean) | test BLEU (mean) | per-seed test BLEU | "
             "test vs CE (paired) | test vs LS (paired) | test vs tuned LS (paired) | train NLL (bits) | "
             "repeated 4-grams | training minutes per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    test = {(r["model"], r["loss"], r["protocol"], r["seed"]): r["test_bleu"] for r in rows}

    def paired(group: list[dict], base: str) -> str:
        """Mean test-BLEU difference to the fixed loss `base` over the seeds both have."""
        gaps = [r["test_bleu"] - test[key] for r in group
                if (key := (r["model"], base, "fixed", r["seed"])) in test and r["loss"] != base]
        return f"{statistics.mean(gaps):+.2f}" if gaps else ""

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["loss"], r["protocol"]), []).append(r)
    tuned = tuned_smoothing(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))  # a model's rows together, the tuning grid's included
    for (model, loss, protocol), group in sorted(groups.items(), key=lambda item: models.index(item[0][0])):
        group.sort(key=lambda r: r["seed"])
        bleus = [r["test_bleu"] for r in group]
        nll = [r["train_nll"] for r in group if r["train_nll"] is not None]
        lines.append(f"| {model} | {loss} | {protocol} | {', '.join(str(r['seed']) for r in group)} | "
                     f"{statistics.mean(r['valid_bleu'] for r in group):.2f} | {statistics.mean(bleus):.2f} | "
                     f"{', '.join(f'{b:.2f}' for b in bleus)} | "
                     f"{paired(group, 'ce')} | {paired(group, 'label_smoothing')} | "
                     f"{paired(group, tuned[model]) if model in tuned and loss != tuned[model] else ''} | "
                     f"{f'{statistics.mean(nll):.2f}' if nll else ''} | "
                     f"{statistics.mean(r['repeated_4grams'] for r in group):.3f} | "
                     f"{statistics.mean(r['minutes'] for r in group):.1f} |")
    curves = [f"- {r['model']} CE seed {r['seed']}: " + ", ".join(f"{u}: {b:.2f} ({e:.3f})"
                                                                   for u, b, e in r["valid_bleu_curve"])
              + f"; correlation {correlation(r['valid_bleu_curve']):+.2f}" for r in rows if "valid_bleu_curve" in r]
    choices = ""
    for model, loss in tuned.items():
        grid = sorted({smoothing_of(m_loss) for m, m_loss, _ in groups if m == model} - {None})
        choices += (f"\n\nTuned LS, {model}: epsilon {smoothing_of(loss):g}, the best mean valid BLEU of "
                    f"{', '.join(f'{eps:g}' for eps in grid)} (0: CE).")
    return "\n".join(lines) + choices + (
        f"\n\nDing de-en (train 16,025 / valid 1,000 / test 1,000 pairs), joint sentencepiece {args.vocab}, "
        f"{args.updates} updates of <= {args.max_tokens} tokens for every run, beam {args.beam}, "
        f"{f'{os.cpu_count()} CPU cores' if args.device == 'cpu' else 'one GPU'}; "
        f"L2T-DLF: {args.teacher_structure} teacher starting at label smoothing 0.1, "
        f"updated every {args.teacher_interval} updates (one-step lookahead, expected-BLEU reward on valid).\n"
        f"\nValid BLEU of CE along training (updates: sacrebleu of the decoded output (the teacher's reward "
        f"surrogate, teacher-forced expected BLEU)), and the correlation of the two:\n" + "\n".join(curves) + "\n")


def tuned_smoothing(rows: list[dict]) -> dict[str, str]:
    """Per model, the fixed loss (CE or a label-smoothing epsilon) with the best mean valid BLEU: the baseline a
    user would tune. Only models with a grid beyond CE and 0.1 get one."""
    means: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if smoothing_of(r["loss"]) is not None:
            means.setdefault(r["model"], {}).setdefault(r["loss"], []).append(r["valid_bleu"])
    return {model: max(found, key=lambda loss: statistics.mean(found[loss])) for model, found in means.items()
            if any(loss.startswith(TUNED_GRID) for loss in found)}


def correlation(curve: list[list[float]]) -> float:
    """Pearson correlation of decoded BLEU and expected BLEU over the checkpoints (nan for fewer than 3, or
    where one of them never moved, as in a run too short to translate anything)."""
    bleu, expected = [b for _, b, _ in curve], [e for _, _, e in curve]
    if len(curve) < 3 or len(set(bleu)) < 2 or len(set(expected)) < 2:
        return float("nan")
    return statistics.correlation(bleu, expected)


def plot_teachers(runs: Path, rows: list[dict], data_bin: Path, out: Path) -> Path | None:
    """The online teachers' smoothing mass and scale at the saved checkpoints, against updates: the mean over
    target types weighted by their training frequency, and the band that holds the middle 80 % of tokens (a
    benign mean can hide types whose whole mass is smoothed away)."""
    import logging

    import matplotlib
    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging set-up lets its font search through
    import matplotlib.pyplot as plt
    import torch
    from fairseq.data import Dictionary

    import fairseq_l2t.fairseq_plugin.checkpoint_safety  # noqa: F401,E501  (weights-only loading of fairseq files)
    from fairseq_l2t.state_features import StudentState
    from fairseq_l2t.teacher import Teacher

    online = [r for r in rows if r["loss"] == "l2t_dlf" and r["protocol"] == "online"]
    if not online:
        return None
    weights = torch.tensor(Dictionary.load(str(data_bin / "dict.en.txt")).count, dtype=torch.float32)
    fig, (mass_ax, scale_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in online:
        save = run_folder(runs, (r["model"], "l2t_dlf", "online", r["seed"]))
        points = []
        for updates, path in interval_checkpoints(save):
            extra = torch.load(path, map_location="cpu", weights_only=True)["extra_state"]["L2TTranslationTask"]
            teacher = Teacher.from_config(extra["controller"]["teacher"]["config"])
            teacher.load_state_dict(extra["controller"]["teacher"]["state"])
            state = StudentState(teacher.num_classes, 1)
            state.load_state_dict(extra["student_state"])
            with torch.no_grad():
                phi = teacher(state.features())
            eps, scale = teacher.structure.mass_and_scale(phi)
            points.append((updates, *_mean_and_band(eps.expand_as(weights), weights),
                           *_mean_and_band(scale.expand_as(weights), weights)))
        if points:
            updates, mass, mass_low, mass_high, scale, scale_low, scale_high = zip(*points)
            label = f"{r['model']} seed {r['seed']}"
            line = mass_ax.plot(updates, mass, marker="o", label=label)[0]
            mass_ax.fill_between(updates, mass_low, mass_high, color=line.get_color(), alpha=0.2)
            line = scale_ax.plot(updates, scale, marker="o", label=label)[0]
            scale_ax.fill_between(updates, scale_low, scale_high, color=line.get_color(), alpha=0.2)
    mass_ax.set(xlabel="updates", ylabel="smoothing mass eps", title="where the teacher smooths")
    scale_ax.set(xlabel="updates", ylabel="loss scale a", title="how hard it pushes")
    fig.suptitle("over the training tokens: mean (line) and the middle 80 % (band)", fontsize=10)
    mass_ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _mean_and_band(values, weights) -> tuple[float, float, float]:
    """Weighted mean and 10th/90th weighted percentiles of per-type values (weights: type frequencies)."""
    import torch
    order = torch.argsort(values)
    cumulative = torch.cumsum(weights[order], 0) / weights.sum()
    low, high = (values[order][int(torch.searchsorted(cumulative, q).clamp(max=len(values) - 1))] for q in (0.1, 0.9))
    return float((values * weights).sum() / weights.sum()), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=9000,
                        help="updates for every run (default: %(default)s, where CE's valid BLEU stops rising)")
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHS), default=["transformer", "lstm"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2],
                        help="Transformer seeds (the LSTM runs the first; default: %(default)s)")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=["online", "reused"],
                        help="L2T-DLF protocols for the Transformer (default: %(default)s)")
    parser.add_argument("--lstm-protocol", choices=PROTOCOLS, default="online",
                        help="the one L2T-DLF protocol run for the LSTM (default: %(default)s)")
    parser.add_argument("--ls-grid", type=float, nargs="*", default=[0.05],
                        help="label-smoothing epsilons trained for the Transformer besides CE (0) and 0.1: the "
                             "tuned-LS baseline is the one of them with the best mean valid BLEU (default: "
                             "%(default)s)")
    parser.add_argument("--teacher-interval", type=int, default=10, help="--teacher-update-interval (default: 10)")
    parser.add_argument("--teacher-structure", choices=TEACHER_STRUCTURES, default=TEACHER_STRUCTURES[0],
                        help="the L2T-DLF teacher's loss family (default: %(default)s); runs of another one belong in "
                             "another --runs folder")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4000, help="joint sentencepiece vocabulary")
    parser.add_argument("--data-bin", type=Path, default=REPO / "data-bin" / "ding-de-en")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "nmt_ding", help="run folders")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "nmt_ding",
                        help="writes OUT.json, OUT.md and OUT_teacher.png (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished runs (row.json) and resume unfinished ones from their checkpoints")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where fairseq trains and decodes (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at a time (CPU: give each OMP_NUM_THREADS = cores / jobs; default: 1)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    prepare_data(args.data_bin, args.vocab)
    runs, finished = plan(args), {}

    def on_row(index: int, r: dict) -> None:
        finished[index] = r
        print(f"{r['model']:12s} {r['loss']:16s} {r['protocol']:14s} seed {r['seed']}: valid BLEU "
              f"{r['valid_bleu']:6.2f}, test BLEU {r['test_bleu']:6.2f}, train NLL {r['train_nll']}, repeated "
              f"4-grams {r['repeated_4grams']:.3f} ({r['minutes']:.1f} min)", flush=True)
        # after every run, in the plan's order: a sitting cut short leaves its table
        write_outputs([finished[i] for i in sorted(finished)], len(runs), args)

    execute(runs, args.seeds, args.jobs, lambda r: train_run(args, *r, args.runs), on_row)
    text, plot = write_outputs([finished[i] for i in sorted(finished)], len(runs), args)
    print("\n" + text + (f"\nteacher plot: {plot}" if plot else ""))


def write_outputs(rows: list[dict], planned: int, args) -> tuple[str, Path | None]:
    """OUT.json, OUT.md (saying how many of the planned runs it holds) and the teachers' plot."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "planned_runs": planned}, indent=1) + "\n")
    done = "" if len(rows) == planned else f"**Partial: {len(rows)} of the {planned} planned runs so far.**\n\n"
    text = done + table(rows, args)
    args.out.with_suffix(".md").write_text(text)
    return text, plot_teachers(args.runs, rows, args.data_bin, args.out.parent / f"{args.out.name}_teacher.png")


if __name__ == "__main__":
    main()
