"""Benchmark the hypergradient engines on real MNIST-5k digits.

Prints, from one run:
  1. time of one reverse (RMD) step over one forward training step, measured
     side by side (target: at most 3);
  2. peak extra memory of the stored-weights and the checkpointed (memory-
     saving) engines as T grows (T = 10, 50, 200 by default; target:
     checkpointed flat in T).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import PeakMemory, measure_in_child  # noqa: E402

from fairseq_l2t.dev_objectives import smooth_error  # noqa: E402
from fairseq_l2t.functional_student import FunctionalStudent, SGDConfig  # noqa: E402
from fairseq_l2t.hypergradient import Unroll, hypergradient  # noqa: E402
from fairseq_l2t.loss_structures import DenseStructure  # noqa: E402
from fairseq_l2t.state_features import StudentState  # noqa: E402
from fairseq_l2t.teacher import Teacher  # noqa: E402
from image_cls.data import BatchStream, eval_batches, load_splits  # noqa: E402
from image_cls.models import build_model  # noqa: E402


def setup(model_name: str, steps: int, device: torch.device):
    torch.manual_seed(0)
    splits = load_splits("mnist5k")
    model = build_model(model_name, 10, splits.in_channels, splits.image_size).to(device)
    stream = BatchStream(splits.train, 64, 0, splits.mean, splits.std, False, device)
    dev = eval_batches(splits.dev, 500, splits.mean, splits.std, device)
    state = StudentState(10, total_steps=steps)
    teacher = Teacher(DenseStructure(10), state.num_features).to(device)
    sgd = SGDConfig(0.05, 0.9, 5e-4)
    unroll = Unroll(FunctionalStudent(model), teacher, sgd, steps, stream.batch_at, dev, smooth_error, state)
    return model, stream, teacher, state, sgd, unroll


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_steps(model, stream, teacher, state, sgd, steps: int, device) -> float:
    """Seconds per ordinary training step under the teacher's loss (module + torch SGD)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)
    sync(device)
    start = time.perf_counter()
    for step in range(steps):
        x, y = stream.batch_at(step)
        lprobs = F.log_softmax(model(x), -1)
        with torch.no_grad():
            phi = teacher(state.features(device=device))
        loss = teacher.loss(lprobs, y, phi)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def time_engine(unroll, start_state, engine: str, snapshots: int, device) -> float:
    """Seconds per step of one hypergradient (its forward pass and reverse pass together)."""
    sync(device)
    started = time.perf_counter()
    hypergradient(unroll, start_state, engine, snapshots=snapshots)
    sync(device)
    return (time.perf_counter() - started) / unroll.steps


def child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    *_, unroll = setup(args.model, args.T[0], device)
    start_state = unroll.student.snapshot()
    hypergradient(replace(unroll, steps=1), start_state, engine=args.engine, snapshots=args.snapshots)  # one-time allocations
    with PeakMemory(device) as peak:
        started = time.perf_counter()
        hypergradient(unroll, start_state, engine=args.engine, snapshots=args.snapshots)
        seconds = time.perf_counter() - started
    print(json.dumps({"peak_extra_bytes": peak.extra_bytes, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp", help="student (default: %(default)s)")
    parser.add_argument("--T", type=int, nargs="+", default=[10, 50, 200], help="unroll lengths for memory")
    parser.add_argument("--timing-T", type=int, default=50, help="unroll length for the time ratio")
    parser.add_argument("--snapshots", type=int, default=8, help="snapshots of the checkpointed engine")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="stored", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    device = torch.device(args.device)
    model, stream, teacher, state, sgd, unroll = setup(args.model, args.timing_T, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"student {args.model} ({n_params:,} parameters), MNIST-5k batches of 64, device {device}, "
          f"torch threads {torch.get_num_threads()}\n")
    start_state = unroll.student.snapshot()
    time_forward_steps(model, stream, teacher, state, sgd, 3, device)  # warm-up
    hypergradient(unroll, start_state, "stored")
    samples = {"forward": [], "stored": [], "checkpointed": []}
    for _ in range(args.rounds):  # interleaved, so that load on a shared machine hits every measurement alike
        samples["forward"].append(time_forward_steps(model, stream, teacher, state, sgd, args.timing_T, device))
        for engine in ("stored", "checkpointed"):
            samples[engine].append(time_engine(unroll, start_state, engine, args.snapshots, device))
    forward = statistics.median(samples["forward"])
    print(f"1) time per step, T = {args.timing_T}, median of {args.rounds} interleaved rounds")
    print(f"   forward training step (module + torch SGD): {1000 * forward:8.2f} ms")
    for engine in ("stored", "checkpointed"):
        per_step = statistics.median(samples[engine])
        print(f"   {engine:12s} forward+reverse per step: {1000 * per_step:8.2f} ms  -> reverse/forward = "
              f"{(per_step - forward) / forward:5.2f}")
    print("   target: stored reverse/forward <= 3\n")

    print("2) peak extra memory of one hypergradient (fresh process per cell)")
    header = "   T     " + "".join(f"{e:>16s}" for e in ("stored", "checkpointed"))
    print(header)
    results = {}
    for T in args.T:
        cells = []
        for engine in ("stored", "checkpointed"):
            r = measure_in_child(__file__, ["--model", args.model, "--T", str(T), "--engine", engine,
                                            "--snapshots", str(args.snapshots), "--device", args.device])
            results[(engine, T)] = r["peak_extra_bytes"]
            cells.append(f"{r['peak_extra_bytes'] / 2**20:9.1f} MiB ({r['seconds']:5.1f}s)")
        print(f"   {T:<6d}" + "".join(f"{c:>16s}" for c in cells))
    first, last = min(args.T), max(args.T)
    for engine in ("stored", "checkpointed"):
        growth = results[(engine, last)] / max(results[(engine, first)], 1)
        print(f"   {engine}: memory at T={last} / T={first} = {growth:.2f}")
    print("   target: checkpointed flat in T")


if __name__ == "__main__":
    main()
