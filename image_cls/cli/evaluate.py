"""Evaluate a student checkpoint (from l2t-image-train-student) on a split and
print one JSON line with its loss, accuracy and error."""
from __future__ import annotations

import argparse
import json

from ..data.batches import eval_batches
from ..data.image_sets import DatasetUnavailable
from ..run_files.checkpoints import CheckpointError, load_checkpoint
from ..training.eval_metrics import evaluate
from ..training.models import build_model
from .common import fail, load_data, resolve_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2t-image-evaluate", description=__doc__)
    parser.add_argument("checkpoint", help="checkpoint.pt written by l2t-image-train-student")
    parser.add_argument("--split", choices=("train", "dev", "test"), default="test", help="default: %(default)s")
    parser.add_argument("--data-root", default="data", help="where torchvision datasets live")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    try:
        ckpt = load_checkpoint(args.checkpoint, "student")
        splits = load_data({**ckpt["args"], "data_root": args.data_root, "download": False})
    except (CheckpointError, DatasetUnavailable) as err:
        fail(str(err))
    model = build_model(ckpt["model"], splits.num_classes, splits.in_channels, splits.image_size).to(device)
    model.load_state_dict(ckpt["model_state"])
    data = getattr(splits, args.split)
    result = evaluate(model, eval_batches(data, min(500, len(data)), splits.mean, splits.std, device))
    result.update(split=args.split, dataset=ckpt["dataset"], model=ckpt["model"], step=ckpt["step"])
    print(json.dumps(result))
    return result


def cli() -> None:
    """The console script: main() returns its summary for callers, which sys.exit would print as an error."""
    main()


if __name__ == "__main__":
    cli()
