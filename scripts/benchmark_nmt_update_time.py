"""Time per fairseq update of l2t_dynamic over label_smoothed_cross_entropy.

Same data, model, batches and optimizer, measured side by side in one process:
fairseq's own Trainer.train_step on identical pre-collated batches, for
a frozen teacher and teacher-update intervals 1 and 10 (soft_target_lowrank
teacher starting at label smoothing 0.1), with the default
one_step engine (the real update reused, forward-mode tangent), with its
finite-difference tangent and with the stored engine (double backward), for
the demo's small Transformer and transformer_iwslt_de_en.
Printed and written as JSON: ms per update, the ratio to label smoothing,
and what one teacher update costs in plain updates (interval 1 minus frozen).
Targets: a teacher update at most 2 plain updates; interval 10 at most 1.3x.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from fairseq import options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "small": ("transformer 2+2 layers, dim 128 (the NMT demo's)",
              ["--arch", "transformer_iwslt_de_en", "--encoder-layers", "2", "--decoder-layers", "2",
               "--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
               "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads",
               "4", "--share-all-embeddings", "--dropout", "0.1"]),
    "iwslt": ("transformer_iwslt_de_en, 6+6 layers, dim 512 (the paper's benchmark model)",
              ["--arch", "transformer_iwslt_de_en", "--share-all-embeddings", "--dropout", "0.1"]),
}


def build_trainer(data: str, model: list[str], extra: list[str], max_tokens: int) -> Trainer:
    argv = [data, "--user-dir", str(REPO / "fairseq_l2t"), "--cpu", "--optimizer", "adam", "--lr", "5e-4",
            "--max-tokens", str(max_tokens), "--seed", "1", "--no-progress-bar", *model, *extra]
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=argv)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion)


def timed_updates(trainers: dict[str, Trainer], updates: int, block: int, warmup: int) -> dict[str, float]:
    """Seconds per update of each trainer, run interleaved in blocks so that load on a
    shared machine hits every setting alike; each trainer gets the same batches."""
    streams = {}
    for name, trainer in trainers.items():
        iterator = trainer.get_train_iterator(epoch=1).next_epoch_itr(shuffle=False)
        streams[name] = [next(iterator) for _ in range(updates + warmup)]
        trainer.task.begin_epoch(1, trainer.get_model())
        for sample in streams[name][:warmup]:
            trainer.train_step([sample])
    spent = dict.fromkeys(trainers, 0.0)
    for start in range(warmup, warmup + updates, block):
        for name, trainer in trainers.items():
            began = time.perf_counter()
            for sample in streams[name][start:start + block]:
                trainer.train_step([sample])
            spent[name] += time.perf_counter() - began
    return {name: seconds / updates for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(REPO / "data-bin" / "ding-de-en"),
                        help="fairseq data-bin (default: %(default)s, from scripts/nmt_demo.py)")
    parser.add_argument("--updates", type=int, nargs="+", default=[50, 10], metavar="N",
                        help="timed updates per setting, per model in --models order (multiples of 10; "
                             "default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["small", "iwslt"],
                        help="small: the demo's Transformer; iwslt: transformer_iwslt_de_en (default: both)")
    parser.add_argument("--json", default=str(REPO / "results" / "benchmark_nmt_update_time.json"),
                        help="where to write what was measured; models measured in an earlier run stay there "
                             "(default: %(default)s)")
    parser.add_argument("--skip-stored", action="store_true",
                        help="leave out the stored-engine settings (each holds a double-backward graph: seven "
                             "transformer_iwslt_de_en trainers at once need more than 24 GB)")
    args = parser.parse_args()
    if len(args.updates) != len(args.models) or any(n < 10 or n % 10 for n in args.updates):
        parser.error("--updates needs one multiple of 10 per model in --models")
    logging.disable(logging.INFO)  # fairseq's and hydra's set-up chatter would bury the table
    warnings.filterwarnings("ignore")
    # the well-posed teacher that starts at the baseline's loss (label smoothing 0.1), with no probability floor
    l2t = ["--task", "l2t_translation", "--criterion", "l2t_dynamic", "--teacher-structure", "soft_target_lowrank",
           "--teacher-smoothing", "0.1"]
    settings = {
        "label_smoothed_cross_entropy": ["--task", "translation", "--criterion", "label_smoothed_cross_entropy",
                                         "--label-smoothing", "0.1"],
        "l2t_dynamic, frozen teacher": [*l2t, "--teacher-update-interval", "0"],
        "l2t_dynamic, interval 1": [*l2t, "--teacher-update-interval", "1"],
        "l2t_dynamic, interval 1, finite-difference tangent": [*l2t, "--teacher-update-interval", "1",
                                                              "--lookahead-tangent", "finite_difference"],
        "l2t_dynamic, interval 1, stored engine": [*l2t, "--teacher-update-interval", "1", "--lookahead-engine",
                                                  "stored"],
        "l2t_dynamic, interval 10": [*l2t, "--teacher-update-interval", "10"],
        "l2t_dynamic, interval 10, finite-difference tangent": [*l2t, "--teacher-update-interval", "10",
                                                               "--lookahead-tangent", "finite_difference"],
        "l2t_dynamic, interval 10, stored engine": [*l2t, "--teacher-update-interval", "10", "--lookahead-engine",
                                                    "stored"],
        "l2t_dynamic, interval 10, lookahead on 1000 tokens": [*l2t, "--teacher-update-interval", "10",
                                                               "--lookahead-tokens", "1000"],
    }
    if args.skip_stored:
        settings = {name: extra for name, extra in settings.items() if "stored" not in name}
    path = Path(args.json)
    report = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    report |= {"data": args.data, "max_tokens": args.max_tokens, "torch_threads": torch.get_num_threads(),
              "targets": {"teacher_update_in_plain_updates": 2.0, "interval_10_over_label_smoothing": 1.3}}
    for model_name, updates in zip(args.models, args.updates):
        description, model = MODELS[model_name]
        print(f"{description}: data {args.data}, max tokens {args.max_tokens}, {updates} timed updates each "
              f"(interleaved blocks of 10), torch threads {torch.get_num_threads()}")
        trainers = {name: build_trainer(args.data, model, extra, args.max_tokens) for name, extra in settings.items()}
        seconds = timed_updates(trainers, updates, block=10, warmup=3)
        plain = seconds["label_smoothed_cross_entropy"]
        frozen = seconds["l2t_dynamic, frozen teacher"]
        row = {"description": description, "updates": updates,
               "ms_per_update": {name: 1000 * value for name, value in seconds.items()},
               "over_label_smoothing": {name: value / plain for name, value in seconds.items()},
               "teacher_update_in_plain_updates": {
                   engine: (seconds[f"l2t_dynamic, interval 1{suffix}"] - frozen) / plain
                   for engine, suffix in (("one_step", ""), ("one_step, finite-difference tangent",
                                                             ", finite-difference tangent"),
                                          ("stored", ", stored engine"))
                   if f"l2t_dynamic, interval 1{suffix}" in seconds}}
        report["models"][model_name] = row
        for name, value in seconds.items():
            print(f"  {name:52s} {1000 * value:8.1f} ms/update   {value / plain:5.2f}x label smoothing")
        for engine, cost in row["teacher_update_in_plain_updates"].items():
            print(f"  one teacher update ({engine}): {cost:.2f} plain updates")
        print()
    print("targets: a teacher update at most 2 plain updates; interval 10 at most 1.3x label smoothing")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
