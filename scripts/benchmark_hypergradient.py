"""Benchmark the hypergradient engines on real MNIST-5k digits.

Cases (each a student, a loss structure and a teacher):
  mlp      MLP 784-500-300-10, dense 10 x 10 W;
  lenet    LeNet (convolutions), dense 10 x 10 W;
  lowrank  the MLP with a 4,000-class output and W = diag + rank-8 (the NMT
           structure at a vocabulary's size; targets stay the digits).

Prints, from one run, and writes with --json OUT:
  1. per case: one ordinary training step (module + torch SGD) and one
     hypergradient step of each engine (its forward and reverse pass
     together), measured interleaved over --rounds rounds (medians), and
     reverse/forward = (engine step - training step) / training step;
  2. peak extra memory of one hypergradient per engine and T (the median over
     --memory-repeats fresh processes per cell; checkpointed with --snapshots);
  3. the checkpointed engine's memory/time trade-off for 4, 8 and 16
     snapshots at T = 50 and 200.
--profile adds torch.profiler's per-op table (top 15 by self CPU time) of one
hypergradient per engine and case.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_memory import PeakMemory, measure_in_child  # scripts/bench_memory.py: a script's own folder is on its path

from fairseq_l2t.dev_objectives import smooth_error
from fairseq_l2t.functional_student import FunctionalStudent, SGDConfig
from fairseq_l2t.hypergradient import Unroll, hypergradient
from fairseq_l2t.loss_structures import DenseStructure, DiagLowRankStructure
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher
from image_cls.data.batches import BatchStream, eval_batches
from image_cls.data.splits import load_splits
from image_cls.training.models import build_model

CASES = {"mlp": ("mlp", 10), "lenet": ("lenet", 10), "lowrank": ("mlp", 4000)}
ENGINES = ("stored", "checkpointed")
TRADE_OFF_SNAPSHOTS = (4, 8, 16)
TRADE_OFF_T = (50, 200)


def setup(case: str, steps: int, device: torch.device):
    model_name, classes = CASES[case]
    torch.manual_seed(0)
    splits = load_splits("mnist5k")
    model = build_model(model_name, classes, splits.in_channels, splits.image_size).to(device)
    stream = BatchStream(splits.train, 64, 0, splits.mean, splits.std, False, device)
    dev = eval_batches(splits.dev, 500, splits.mean, splits.std, device)
    state = StudentState(classes, total_steps=steps)
    structure = DenseStructure(classes) if classes <= 200 else DiagLowRankStructure(classes, 8)
    teacher = Teacher(structure, state.num_features).to(device)
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
    """One memory cell, in a fresh process: peak extra bytes and seconds of one hypergradient."""
    device = torch.device(args.device)
    *_, unroll = setup(args.case, args.T[0], device)
    start_state = unroll.student.snapshot()
    hypergradient(replace(unroll, steps=1), start_state, engine=args.engine, snapshots=args.snapshots)  # allocations
    with PeakMemory(device) as peak:
        started = time.perf_counter()
        hypergradient(unroll, start_state, engine=args.engine, snapshots=args.snapshots)
        seconds = time.perf_counter() - started
    print(json.dumps({"peak_extra_bytes": peak.extra_bytes, "seconds": seconds}))


def timing(case: str, args: argparse.Namespace, device: torch.device) -> dict:
    model, stream, teacher, state, sgd, unroll = setup(case, args.timing_T, device)
    start_state = unroll.student.snapshot()
    time_forward_steps(model, stream, teacher, state, sgd, 3, device)  # warm-up
    for engine in ENGINES:
        hypergradient(unroll, start_state, engine, snapshots=args.snapshots)
    samples = {"forward": [], **{engine: [] for engine in ENGINES}}
    for _ in range(args.rounds):  # interleaved, so that load on a shared machine hits every measurement alike
        samples["forward"].append(time_forward_steps(model, stream, teacher, state, sgd, args.timing_T, device))
        for engine in ENGINES:
            samples[engine].append(time_engine(unroll, start_state, engine, args.snapshots, device))
    forward = statistics.median(samples["forward"])
    result = {"case": case, "parameters": sum(p.numel() for p in model.parameters()), "T": args.timing_T,
              "snapshots": args.snapshots, "forward_ms": 1000 * forward, "engines": {}}
    for engine in ENGINES:
        per_step = statistics.median(samples[engine])
        result["engines"][engine] = {"forward_reverse_ms": 1000 * per_step,
                                     "reverse_over_forward": (per_step - forward) / forward}
    if args.profile:
        result["profile"] = {engine: profile(unroll, start_state, engine, args.snapshots) for engine in ENGINES}
    return result


def profile(unroll, start_state, engine: str, snapshots: int) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        hypergradient(unroll, start_state, engine, snapshots=snapshots)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def memory_cell(case: str, engine: str, T: int, snapshots: int, device: str, repeats: int) -> dict:
    """Medians over `repeats` fresh processes: a process's resident high-water mark varies by tens of MiB."""
    runs = [measure_in_child(__file__, ["--case", case, "--T", str(T), "--engine", engine,
                                        "--snapshots", str(snapshots), "--device", device]) for _ in range(repeats)]
    return {"case": case, "engine": engine, "T": T, "snapshots": snapshots if engine == "checkpointed" else None,
            "repeats": repeats, **{k: statistics.median(r[k] for r in runs) for k in ("peak_extra_bytes", "seconds")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES),
                        help="(default: %(default)s)")
    parser.add_argument("--T", type=int, nargs="+", default=[10, 50, 200], help="unroll lengths for memory")
    parser.add_argument("--timing-T", type=int, default=50, help="unroll length for the time ratio")
    parser.add_argument("--snapshots", type=int, default=8, help="snapshots of the checkpointed engine")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--memory-repeats", type=int, default=3, help="processes per memory cell (median)")
    parser.add_argument("--no-trade-off", action="store_true", help="skip table 3")
    parser.add_argument("--profile", action="store_true", help="add torch.profiler tables")
    parser.add_argument("--json", metavar="OUT", help="also write everything measured to this JSON file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", default="mlp", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="stored", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    device = torch.device(args.device)
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch_size": 64, "timing": [], "memory": [], "trade_off": []}
    print(f"MNIST-5k batches of 64, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"1) time per step, T = {args.timing_T}, median of {args.rounds} interleaved rounds "
          f"(checkpointed: {args.snapshots} snapshots)")
    for case in args.cases:
        result = timing(case, args, device)
        report["timing"].append(result)
        print(f"   {case:8s} ({result['parameters']:,} parameters): training step {result['forward_ms']:8.2f} ms")
        for engine, cell in result["engines"].items():
            print(f"            {engine:12s} forward+reverse per step {cell['forward_reverse_ms']:8.2f} ms -> "
                  f"reverse/forward = {cell['reverse_over_forward']:5.2f}")
        for engine, table in result.get("profile", {}).items():
            print(f"\n   profile of one {engine} hypergradient ({case}):\n{table}")
    print("   targets (MLP): stored <= 2.0, checkpointed (8 snapshots) <= 4.0\n")

    print(f"2) peak extra memory of one hypergradient (median of {args.memory_repeats} fresh processes per cell; "
          f"checkpointed: {args.snapshots} snapshots)")
    for case in args.cases:
        for T in args.T:
            cells = [memory_cell(case, engine, T, args.snapshots, args.device, args.memory_repeats)
                     for engine in ENGINES]
            report["memory"] += cells
            print(f"   {case:8s} T={T:<4d}" + "".join(f"  {c['engine']}: {c['peak_extra_bytes'] / 2**20:8.1f} MiB "
                                                     f"({c['seconds']:5.1f} s)" for c in cells))
        for engine in ENGINES:
            by_T = {c["T"]: c["peak_extra_bytes"] for c in report["memory"] if c["case"] == case
                    and c["engine"] == engine}
            growth = by_T[max(args.T)] / max(by_T[min(args.T)], 1)
            print(f"   {case:8s} {engine}: memory at T={max(args.T)} / T={min(args.T)} = {growth:.2f}")
    print("   target: checkpointed flat in T (T=200 within 1.5x of T=10)\n")

    if not args.no_trade_off:
        print(f"3) checkpointed engine, memory and time by snapshots (median of {args.memory_repeats} fresh processes "
              f"per cell)")
        for case in args.cases:
            for T in TRADE_OFF_T:
                for snapshots in TRADE_OFF_SNAPSHOTS:
                    cell = memory_cell(case, "checkpointed", T, snapshots, args.device, args.memory_repeats)
                    report["trade_off"].append(cell)
                    print(f"   {case:8s} T={T:<4d} snapshots={snapshots:<3d} {cell['peak_extra_bytes'] / 2**20:8.1f} MiB"
                          f"  {1000 * cell['seconds'] / T:8.2f} ms per step")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
