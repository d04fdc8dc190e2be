"""Time per fairseq update of l2t_dynamic over label_smoothed_cross_entropy.

Same data, model, batches and optimizer, measured side by side in one process:
fairseq's own Trainer.train_step on identical pre-collated batches, for
teacher-update intervals 1, 10 and 100 (target: at most 1.5x at interval 10).
"""
from __future__ import annotations

import argparse
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
    parser.add_argument("--updates", type=int, default=100, help="timed updates per setting (multiple of 10)")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--model", choices=sorted(MODELS), default="small",
                        help="small: the demo's Transformer; iwslt: transformer_iwslt_de_en (default: %(default)s)")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # fairseq's and hydra's set-up chatter would bury the table
    warnings.filterwarnings("ignore")
    baseline_args = ["--task", "translation", "--criterion", "label_smoothed_cross_entropy",
                     "--label-smoothing", "0.1"]
    settings = [("label_smoothed_cross_entropy", baseline_args)] + [
        (f"l2t_dynamic, interval {k}", ["--task", "l2t_translation", "--criterion", "l2t_dynamic",
                                        "--teacher-update-interval", str(k)]) for k in (1, 10, 100)]
    description, model = MODELS[args.model]
    print(f"data {args.data}, {description}, max tokens {args.max_tokens}, "
          f"{args.updates} timed updates each (interleaved blocks of 10), torch threads {torch.get_num_threads()}\n")
    trainers = {name: build_trainer(args.data, model, extra, args.max_tokens) for name, extra in settings}
    seconds = timed_updates(trainers, args.updates, block=10, warmup=3)
    baseline = seconds[settings[0][0]]
    for name, value in seconds.items():
        print(f"{name:32s} {1000 * value:8.1f} ms/update   {value / baseline:5.2f}x")
    print("\ntarget: interval 10 at most 1.5x")


if __name__ == "__main__":
    main()
