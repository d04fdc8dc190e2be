"""Data parallelism: 2 gloo processes on CPU must reproduce the 1-process results."""
import contextlib
import dataclasses
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypergrad_helpers import NUM_CLASSES, make_unroll, perturbed_teacher, relative_error, tiny_mlp

from fairseq_l2t import distributed
from fairseq_l2t.functional_student import SGDConfig
from fairseq_l2t.hypergradient import hypergradient, run_unroll
from fairseq_l2t.state_features import StudentState
from image_cls.cli import train_student, train_teacher
from image_cls.data.batches import BatchStream
from image_cls.data.image_sets import ImageSet
from image_cls.run_files import plots
from image_cls.run_files.checkpoints import save_finite_on_main
from image_cls.training.distributed import ShardedStream, max_over_ranks, require_divisible, shard_split
from image_cls.training.student_loop import train_student as train_student_loop
from image_cls.training.student_losses import StudentLoss

# equality claims: 2 processes = 1 (float64 core exactly; the float32 CLIs within summation error)
pytestmark = pytest.mark.equality

WORLD = 2
DEV_SPLIT = 13  # rank 0 holds 13 of the 20 dev examples, rank 1 the other 7: unequal dev shards
ENGINES = (("stored", 8), ("checkpointed", 2), ("one_step", 1))


def for_engine(unroll, engine: str):
    """The unroll itself, or its first step alone for the one_step engine."""
    return dataclasses.replace(unroll, steps=1) if engine == "one_step" else unroll


def full_unroll():
    torch.manual_seed(0)
    return make_unroll(tiny_mlp(), perturbed_teacher(), steps=6)


def sharded_unroll(rank: int):
    """Rank `rank`'s half of every training batch and its unequal share of the dev set."""
    full = full_unroll()
    half = 8 // WORLD  # make_unroll's batches hold 8 examples

    def batch_at(t):
        x, y = full.batch_at(t)
        return x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]

    dev_x = torch.cat([x for x, _ in full.dev_batches])
    dev_y = torch.cat([y for _, y in full.dev_batches])
    rows = slice(0, DEV_SPLIT) if rank == 0 else slice(DEV_SPLIT, None)
    tracker = StudentState(NUM_CLASSES, full.tracker.total_steps, sync=distributed.all_reduce_sum)
    return dataclasses.replace(full, batch_at=batch_at, dev_batches=[(dev_x[rows], dev_y[rows])], tracker=tracker,
                               grad_sync=distributed.all_reduce_mean, dev_sync=distributed.all_reduce_sum)


def tiny_stream() -> BatchStream:
    images = torch.arange(9 * 4, dtype=torch.uint8).reshape(9, 1, 2, 2)
    return BatchStream(ImageSet(images, torch.arange(9)), 4, seed=0, mean=(0.5,), std=(0.2,), augment=False)


def _core_worker(rank: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    try:
        assert distributed.is_distributed() and distributed.rank() == rank and distributed.world_size() == WORLD
        unroll = sharded_unroll(rank)
        start = unroll.student.snapshot()
        results = {}
        for engine, snapshots in ENGINES:
            result = hypergradient(for_engine(unroll, engine), start, engine, snapshots=snapshots)
            distributed.check_identical(result.teacher_grads, f"{engine} teacher gradients")
            results[engine] = {"grads": result.teacher_grads, "value": result.dev_objective,
                               "final": result.final.params, "features": result.tracker.features(torch.float64)}
        results["forward_only"] = run_unroll(unroll, start)[0]
        with pytest.raises(ValueError, match="single-process"):
            hypergradient(unroll, start, "unrolled")
        per_class = StudentState(NUM_CLASSES, 10, extras=("class_accuracy", "confusion"),
                                 sync=distributed.all_reduce_sum).copy()
        lprobs = torch.log_softmax(torch.arange(24.0, dtype=torch.float64).reshape(8, 3).sin(), -1)
        target = torch.tensor([0, 1, 2, 0, 1, 1, 2, 0])
        per_class.observe_batch(lprobs[rank * 4:(rank + 1) * 4], target[rank * 4:(rank + 1) * 4])
        results["per_class_features"] = per_class.features(torch.float64)
        mixed = distributed.all_reduce_sum([torch.tensor([rank + 1.0], dtype=torch.float64),
                                            torch.tensor([[rank + 0.5]], dtype=torch.float32)])
        results["mixed_sum"] = mixed
        with pytest.raises(RuntimeError, match="differ between ranks"):
            distributed.check_identical([torch.tensor([float(rank)])], "rank-dependent tensors")
        with pytest.raises(ValueError, match="batch size 31 is not divisible by the 2 processes"):
            require_divisible(31)
        results["batch_shard"] = ShardedStream(tiny_stream()).batch_at(3)
        results["split_shard"] = shard_split(tiny_stream().data).labels
        _stop_together_worker(rank, out, results)
        torch.save(results, out + f".{rank}")
    finally:
        dist.destroy_process_group()


class _OverflowOnRank1:
    """Rank 1's slice of every batch holds an Inf image, so only its loss is non-finite."""

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.ones(2, 4)
        inputs[0, 0] = float("inf") if distributed.rank() == 1 else 1.0
        return inputs, torch.tensor([0, 1])


def _stop_together_worker(rank: int, out: str, results: dict) -> None:
    """What one rank alone sees (a poisoned or unwritable checkpoint on rank 0, a non-finite loss on rank 1)
    must stop every rank, each with an error, instead of leaving the others in the next collective."""
    results["max_over_ranks"] = max_over_ranks(3 * rank)
    nan = {"w": torch.tensor([float("nan")])}
    with pytest.raises(FloatingPointError, match="not finite"):
        save_finite_on_main(nan if rank == 0 else {"w": torch.zeros(1)}, out + ".poisoned")
    results["poisoned_written"] = Path(out + ".poisoned").exists()
    save_finite_on_main({"w": torch.zeros(1)} if rank == 0 else nan, out + ".kept")  # only rank 0's obj counts
    results["kept"] = torch.load(out + ".kept", weights_only=True)["w"]
    if rank == 0:
        Path(out + ".blocker").write_text("a file where the checkpoint's folder should be")
    with pytest.raises(OSError):
        save_finite_on_main({"w": torch.zeros(1)}, out + ".blocker/checkpoint.pt")
    model = torch.nn.Linear(4, 2)
    state = StudentState(2, 1, sync=distributed.all_reduce_sum)
    with pytest.raises(FloatingPointError, match="the student's loss became") as info:
        train_student_loop(model, _OverflowOnRank1(), 1, SGDConfig(0.1), StudentLoss("ce"), state,
                           [(torch.ones(2, 4), torch.tensor([0, 1]))], eval_every=1, progress=False)
    results["student_loss_error"] = str(info.value)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit):
        train_teacher.main(["--engine", "unrolled", "--no-progress", "--out", out + f".unrolled{rank}"])
    results["unrolled_error"] = stderr.getvalue()
    results["unrolled_out_exists"] = Path(out + f".unrolled{rank}").exists()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("core")
    out = str(folder / "result")
    mp.spawn(_core_worker, args=(str(folder / "rendezvous"), out), nprocs=WORLD, join=True)
    return [torch.load(out + f".{rank}", weights_only=False) for rank in range(WORLD)]


@pytest.mark.parametrize("engine,snapshots", ENGINES)
def test_two_shards_give_the_full_batch_hypergradient_on_every_rank(two_process_results, engine, snapshots):
    unroll = for_engine(full_unroll(), engine)
    reference = hypergradient(unroll, unroll.student.snapshot(), engine, snapshots=snapshots)
    flat = torch.cat([g.reshape(-1) for g in reference.teacher_grads])
    assert flat.abs().max() > 1e-4
    for rank, results in enumerate(two_process_results):
        mine = results[engine]
        assert relative_error(torch.cat([g.reshape(-1) for g in mine["grads"]]), flat) < 1e-10, rank
        assert mine["value"] == pytest.approx(reference.dev_objective, rel=1e-12)
        for a, b in zip(mine["final"], reference.final.params):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mine["features"], reference.tracker.features(torch.float64), rtol=1e-12, atol=0)
    first, second = (results[engine]["grads"] for results in two_process_results)
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # bit-identical across ranks


def test_forward_only_state_features_and_reductions_match_one_process(two_process_results):
    unroll = full_unroll()
    value = run_unroll(unroll, unroll.student.snapshot())[0]
    single = StudentState(NUM_CLASSES, 10, extras=("class_accuracy", "confusion"))
    lprobs = torch.log_softmax(torch.arange(24.0, dtype=torch.float64).reshape(8, 3).sin(), -1)
    single.observe_batch(lprobs, torch.tensor([0, 1, 2, 0, 1, 1, 2, 0]))
    for results in two_process_results:
        assert results["forward_only"] == pytest.approx(value, rel=1e-12)
        torch.testing.assert_close(results["per_class_features"], single.features(torch.float64), rtol=1e-12, atol=0)
        total64, total32 = results["mixed_sum"]
        assert total64.dtype == torch.float64 and total64.item() == 3.0
        assert total32.dtype == torch.float32 and total32.shape == (1, 1) and total32.item() == 2.0


def test_every_rank_takes_its_contiguous_slice_of_batches_and_splits(two_process_results):
    inputs, target = tiny_stream().batch_at(3)
    shards = [results["batch_shard"] for results in two_process_results]
    assert all(len(y) == 2 for _, y in shards)
    assert torch.equal(torch.cat([x for x, _ in shards]), inputs)
    assert torch.equal(torch.cat([y for _, y in shards]), target)
    assert [results["split_shard"].tolist() for results in two_process_results] == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]


def test_what_one_rank_sees_stops_every_rank_with_one_line(two_process_results):
    first, second = two_process_results
    assert first["max_over_ranks"] == second["max_over_ranks"] == 3
    assert not first["poisoned_written"] and torch.equal(first["kept"], torch.zeros(1))
    assert "at step 0" in second["student_loss_error"] and "another process" not in second["student_loss_error"]
    assert "the student's loss became non-finite in another process at step 0" in first["student_loss_error"]
    for results in two_process_results:
        assert results["unrolled_error"] == "error: --engine unrolled is single-process; use stored or checkpointed\n"
        assert not results["unrolled_out_exists"]


def test_helpers_are_copies_outside_a_process_group():
    tensors = [torch.ones(2), torch.zeros(1, dtype=torch.float64)]
    for reduce in (distributed.all_reduce_sum, distributed.all_reduce_mean):
        out = reduce(tensors)
        assert all(torch.equal(a, b) and a is not b for a, b in zip(out, tensors))
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    distributed.check_identical(tensors, "anything")  # nothing to compare against
    assert distributed.checksum([torch.ones(2)]) != distributed.checksum([torch.ones(2, dtype=torch.float64)])


REPO = Path(__file__).resolve().parents[1]
# MLP: no BatchNorm or dropout, whose statistics and masks differ between shards and a whole batch
# The CLIs run in float32, where 2 processes cannot equal 1 bit for bit: gloo sums the two halves' gradients in
# another order than one process sums the whole batch.  The teacher learns by SGD here (--teacher-optimizer sgd):
# Adam's normalised step turns a rounding difference of a near-zero hypergradient entry into a whole lr-sized
# step of either sign (60 of 100 entries of base.W differed by up to 6e-5 on another CPU), while SGD keeps the
# difference at rounding size.  That size: a batch of 32 summed in float32 is off by at most about
# 32 * eps32 = 4e-6 of its terms' magnitude (|g| < 1 here); 22 SGD steps (10 + 12) at lr 0.05 of the student, and
# 2 + 3 teacher steps at lr 0.5, carry it into the weights with little growth over so short a run: an absolute
# difference of about 22 * 0.05 * 4e-6 + 5 * 0.5 * 4e-6 = 1.4e-5.  Measured (2026-12, AVX512 and
# ATEN_CPU_CAPABILITY=default): at most 3.9e-7, while the online teacher moves by 0.25.  An accuracy may differ by
# one image (a logit tie broken the other way by a 1e-7 difference): ONE_IMAGE.
COMMON = ["--model", "mlp", "--no-progress", "--seed", "1", "--batch-size", "32", "--teacher-optimizer", "sgd",
          "--teacher-lr", "0.5"]
TEACHER = COMMON + ["--rounds", "1", "--steps-per-round", "10", "--episode-steps", "5"]
STUDENT = COMMON + ["--loss", "teacher", "--steps", "12", "--eval-every", "6", "--test-curve", "--online-every", "4",
                    "--lookahead", "2"]
TOLERANCE = {"rtol": 0, "atol": 3e-5}  # twice the bound above
ONE_IMAGE = 1 / 500 + 1e-9  # the reward half of mnist5k's dev split


def torchrun(module: str, argv: list[str]) -> subprocess.CompletedProcess:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(WORLD), "--master-port",
               str(port), "-m", module, *argv]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory):
    """The teacher CLI, then the student CLI taught (and online-trained) by its teacher, as 1 and 2 processes."""
    root = tmp_path_factory.mktemp("image")
    train_teacher.main(TEACHER + ["--out", str(root / "teacher1")])
    teacher = ["--teacher", str(root / "teacher1" / "teacher.pt")]
    train_student.main(STUDENT + teacher + ["--out", str(root / "student1")])
    for name, module, argv in (("teacher2", "image_cls.cli.train_teacher", TEACHER),
                               ("student2", "image_cls.cli.train_student", STUDENT + teacher)):
        done = torchrun(module, argv + ["--out", str(root / name)])
        assert done.returncode == 0, done.stderr[-3000:]
    return root


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_close_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **TOLERANCE)


def test_two_process_teacher_training_matches_one_process(image_runs):
    one, two = image_runs / "teacher1", image_runs / "teacher2"
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    assert_close_states(load(one / "teacher.pt")["teacher"]["state"], load(two / "teacher.pt")["teacher"]["state"])
    log_one, log_two = plots.read_log(one / "teacher_log.csv"), plots.read_log(two / "teacher_log.csv")
    assert log_two["episode"] == [0.0, 1.0]  # one row per episode: only rank 0 logs
    assert log_two["dev_accuracy"] == pytest.approx(log_one["dev_accuracy"], abs=ONE_IMAGE)
    assert log_two["dev_objective"] == pytest.approx(log_one["dev_objective"], rel=1e-5)


def test_two_process_online_taught_student_matches_one_process(image_runs):
    one, two = image_runs / "student1", image_runs / "student2"
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    first, second = load(one / "checkpoint.pt"), load(two / "checkpoint.pt")
    assert_close_states(first["model_state"], second["model_state"])
    # the teacher moved online (3 updates, each checked bit-identical across ranks by the CLI) and still agrees
    assert_close_states(first["teacher"]["state"], second["teacher"]["state"])
    initial = load(image_runs / "teacher1" / "teacher.pt")["teacher"]["state"]
    assert any(not torch.equal(initial[k], second["teacher"]["state"][k]) for k in initial)
    log_one, log_two = plots.read_log(one / "log.csv"), plots.read_log(two / "log.csv")
    assert log_two["step"] == [6.0, 12.0] and log_two["teacher_updates"] == [2.0, 3.0]
    assert log_two["dev_accuracy"] == pytest.approx(log_one["dev_accuracy"], abs=ONE_IMAGE)
    assert log_two["test_accuracy"] == pytest.approx(log_one["test_accuracy"], abs=ONE_IMAGE)
    assert second["student_state"]["train_loss"] == pytest.approx(first["student_state"]["train_loss"], rel=1e-6)
