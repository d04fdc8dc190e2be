"""fairseq plugin robustness through the real fairseq-train: data-parallel
training (2 gloo processes) against one process, a real kill and resume, and
non-finite teacher values."""
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")
from test_fairseq_plugin import BIN, COMMON, TINY_TRANSFORMER, binarize, model_state, teacher_state, train  # noqa: E402

BILINEAR = ["--teacher-structure", "lowrank"]  # the teacher whose loss needs the probability floor
DETERMINISTIC = ["--criterion", "l2t_dynamic", "--dropout", "0", "--teacher-update-interval", "2",
                 "--teacher-horizon", "12"]


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory) -> Path:
    return binarize(tmp_path_factory.mktemp("bible") / "bin", 400)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.equality
def test_two_data_parallel_ranks_equal_one_process_with_the_same_global_batch(data_bin, tmp_path):
    """Two ranks with one micro-batch each take the updates of one process with --update-freq 2: the same
    student, the same teacher (which every rank checks is bit-identical after every teacher update)."""
    # the teacher learns by SGD: Adam's normalised step would turn the float32 summation differences between one
    # and two processes (gloo sums the ranks' gradients in another order) into lr-sized steps of either sign
    args = [*DETERMINISTIC, "--max-tokens", "300", "--max-update", "4", "--reward-batches", "2",
            "--teacher-optimizer", "sgd", "--teacher-lr", "0.5"]
    train(data_bin, tmp_path / "one", *args, "--update-freq", "2")
    port = free_port()
    ranks = [subprocess.Popen(
        [str(BIN / "fairseq-train"), str(data_bin), *COMMON, *TINY_TRANSFORMER, "--save-dir", str(tmp_path / "two"),
         *args, "--distributed-world-size", "2", "--distributed-rank", str(rank), "--distributed-no-spawn",
         "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-backend", "gloo",
         "--ddp-backend", "legacy_ddp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)]
    logs = [rank.communicate(timeout=600)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), logs[0][-3000:] + logs[1][-3000:]
    one, two = tmp_path / "one" / "checkpoint_last.pt", tmp_path / "two" / "checkpoint_last.pt"
    for key, value in model_state(one).items():
        torch.testing.assert_close(model_state(two)[key], value, rtol=1e-4, atol=1e-5, msg=key)
    teacher_one, teacher_two = teacher_state(one), teacher_state(two)
    assert teacher_one["controller"]["updates"] == teacher_two["controller"]["updates"] == 2
    initial = teacher_state_at_init(data_bin, tmp_path)
    learned_one, learned_two = (t["controller"]["teacher"]["state"] for t in (teacher_one, teacher_two))
    assert any(not torch.allclose(learned_one[k], initial[k]) for k in initial)  # the teacher learned
    for key, value in learned_one.items():
        torch.testing.assert_close(learned_two[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert teacher_two["student_state"] == pytest.approx(teacher_one["student_state"])


def teacher_state_at_init(data_bin: Path, tmp_path: Path) -> dict:
    train(data_bin, tmp_path / "init", "--criterion", "l2t_dynamic", "--max-update", "1",
          "--teacher-update-interval", "0")
    return teacher_state(tmp_path / "init" / "checkpoint_last.pt")["controller"]["teacher"]["state"]


@pytest.mark.equality
def test_killed_run_resumed_through_restore_file_ends_as_an_uninterrupted_run(data_bin, tmp_path):
    """SIGKILL right after the first mid-epoch checkpoint, then the same command again (fairseq restores
    checkpoint_last.pt): student, teacher, its optimizer state and the state features end bit-equal,
    dropout masks included."""
    args = [*DETERMINISTIC, "--dropout", "0.1", "--max-tokens", "300", "--max-update", "12",
            "--save-interval-updates", "4", "--lookahead-steps", "2"]
    train(data_bin, tmp_path / "whole", *args)
    cmd = [str(BIN / "fairseq-train"), str(data_bin), *COMMON, *TINY_TRANSFORMER, "--save-dir",
           str(tmp_path / "killed"), *args]
    victim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in victim.stdout:
        if re.search(r"Saved checkpoint .*@ \d+ updates", line):
            victim.send_signal(signal.SIGKILL)
            break
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    killed_at = torch.load(tmp_path / "killed" / "checkpoint_last.pt", map_location="cpu",
                           weights_only=True)["optimizer_history"][-1]["num_updates"]
    assert 0 < killed_at < 12
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(rf"Loaded checkpoint \S*checkpoint_last.pt \(epoch 1 @ {killed_at} updates\)", resumed.stdout)
    whole, killed = tmp_path / "whole" / "checkpoint_last.pt", tmp_path / "killed" / "checkpoint_last.pt"
    for key, value in model_state(whole).items():
        assert torch.equal(model_state(killed)[key], value), key
    teacher_whole, teacher_killed = teacher_state(whole), teacher_state(killed)
    assert teacher_killed["controller"]["updates"] == teacher_whole["controller"]["updates"] == 6
    for key, value in teacher_whole["controller"]["teacher"]["state"].items():
        assert torch.equal(teacher_killed["controller"]["teacher"]["state"][key], value), key
    for moments_whole, moments_killed in zip(teacher_whole["controller"]["optimizer"]["state"].values(),
                                             teacher_killed["controller"]["optimizer"]["state"].values()):
        assert all(torch.equal(moments_whole[k], moments_killed[k]) for k in moments_whole)
    assert teacher_killed["student_state"] == teacher_whole["student_state"]


@pytest.fixture(scope="module")
def saved_run(data_bin, tmp_path_factory) -> Path:
    """checkpoint_last.pt of a one-update l2t_translation run on the fixture (the default, well-posed teacher)."""
    root = tmp_path_factory.mktemp("saved")
    train(data_bin, root, "--criterion", "l2t_dynamic", "--max-update", "1", "--teacher-update-interval", "0")
    return root / "checkpoint_last.pt"


def edited_teacher(saved_run: Path, out: Path, **fills: float) -> Path:
    checkpoint = torch.load(saved_run, map_location="cpu", weights_only=True)
    teacher = checkpoint["extra_state"]["L2TTranslationTask"]["controller"]["teacher"]["state"]
    for name, value in fills.items():
        teacher[name.replace("__", ".")].fill_(value)
    torch.save(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def overflowing_teacher(saved_run, tmp_path_factory) -> Path:
    """A saved teacher with finite parameters whose output overflows to inf: gates tanh(10) = 1, so
    eps = 3e38 + 2 * 3e38."""
    return edited_teacher(saved_run, tmp_path_factory.mktemp("overflow") / "teacher.pt", base__eps=3e38,
                          delta__eps=3e38, gate__bias=10.0)


def test_non_finite_teacher_loss_is_skipped_counted_and_the_student_keeps_training(data_bin, tmp_path,
                                                                                 overflowing_teacher):
    done = train(data_bin, tmp_path / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "3",
                 "--teacher-update-interval", "0", "--teacher-init", str(overflowing_teacher))
    log = done.stdout + done.stderr
    assert "non-finite loss from the teacher" in log
    assert re.search(r"teacher_skipped 3\b", log), log[-2000:]
    student = model_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert all(bool(torch.isfinite(v).all()) for v in student.values())  # trained on the last finite loss
    assert re.search(r"\| loss [\d.]+ \| nll_loss [\d.]+", log)


def test_unrecoverable_non_finite_teacher_stops_with_one_line_and_saves_nothing(data_bin, tmp_path,
                                                                               overflowing_teacher):
    done = train(data_bin, tmp_path / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "6",
                 "--teacher-update-interval", "2", "--teacher-init", str(overflowing_teacher),
                 "--max-non-finite", "2", check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-l2t error: 2 consecutive non-finite teacher outputs"), last
    assert not list((tmp_path / "ckpt").glob("*.pt"))


def truncated(path: Path, out: Path) -> Path:
    out.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return out


def with_empty_subset(data_bin: Path, out: Path, subset: str) -> Path:
    """A copy of data_bin with an extra, empty split (both languages)."""
    from fairseq.data import indexed_dataset
    shutil.copytree(data_bin, out)
    for lang in ("es", "en"):
        prefix = out / f"{subset}.es-en.{lang}"
        builder = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=400)
        builder.finalize(str(prefix) + ".idx")
    return out


@pytest.mark.parametrize("case", ["teacher_lr_zero", "lookahead_lr_nan", "lookahead_steps_zero",
                                  "one_step_engine_for_two_steps", "tangent_of_a_reverse_engine",
                                  "lookahead_tokens_negative",
                                  "reward_batches_negative", "max_non_finite_zero", "prob_floor_one",
                                  "nan_teacher_init", "truncated_teacher_init", "empty_reward_subset",
                                  "well_posed_with_floor", "smoothing_of_a_bilinear_teacher"])
def test_more_bad_input_gives_one_line_error_and_writes_nothing(data_bin, saved_run, tmp_path, case):
    extra, expected = {
        "teacher_lr_zero": (["--teacher-lr", "0"], "--teacher-lr must be a positive number"),
        "lookahead_lr_nan": (["--lookahead-lr", "nan"], "--lookahead-lr must be a positive number"),
        "lookahead_steps_zero": (["--lookahead-steps", "0"], "--lookahead-steps must be >= 1"),
        "one_step_engine_for_two_steps": (["--lookahead-engine", "one_step", "--lookahead-steps", "2"],
                                          "--lookahead-engine one_step differentiates one step"),
        "tangent_of_a_reverse_engine": (["--lookahead-steps", "2", "--lookahead-tangent", "finite_difference"],
                                        "--lookahead-tangent finite_difference is the one_step engine's"),
        "lookahead_tokens_negative": (["--lookahead-tokens", "-5"], "--lookahead-tokens must be >= 0, got -5"),
        "reward_batches_negative": (["--reward-batches", "-1"], "--reward-batches -1 must be 0 or a multiple"),
        "max_non_finite_zero": (["--max-non-finite", "0"], "--max-non-finite must be >= 1"),
        "prob_floor_one": ([*BILINEAR, "--teacher-prob-floor", "1"], "--teacher-prob-floor must be in [0, 1), got 1.0"),
        "nan_teacher_init": (["--teacher-init", str(edited_teacher(saved_run, tmp_path / "nan.pt",
                                                                  delta__eps=float("nan")))],
                             "non-finite parameters"),
        "truncated_teacher_init": (["--teacher-init", str(truncated(saved_run, tmp_path / "half.pt"))],
                                   "truncated or corrupt"),
        "empty_reward_subset": (["--reward-subset", "heldout"], "--reward-subset heldout has no sentences"),
        "well_posed_with_floor": (["--teacher-structure", "smoothing", "--teacher-prob-floor", "1e-4"],
                                  "--teacher-structure smoothing is bounded below by construction"),
        "smoothing_of_a_bilinear_teacher": ([*BILINEAR, "--teacher-smoothing", "0.1"],
                                            "--teacher-smoothing 0.1 needs a well-posed --teacher-structure"),
    }[case]
    data = with_empty_subset(data_bin, tmp_path / "bin", "heldout") if case == "empty_reward_subset" else data_bin
    done = train(data, tmp_path / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "2", *extra, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-l2t error:") and expected in last, last
    assert not list((tmp_path / "ckpt").glob("*.pt"))


def schema1(saved_run: Path, out: Path) -> Path:
    """saved_run with its teacher in the layout of checkpoints written before the TeacherController (schema 1)."""
    checkpoint = torch.load(saved_run, map_location="cpu", weights_only=True)
    state = checkpoint["extra_state"]["L2TTranslationTask"]
    controller = state.pop("controller")
    state.update(teacher_config=controller["teacher"]["config"], teacher=controller["teacher"]["state"],
                 teacher_optimizer=controller["optimizer"], teacher_updates=controller["updates"],
                 teacher_skipped_non_finite=0, non_finite_in_a_row={"loss": 0, "hypergradient": 0},
                 last_finite_phi=controller["last_finite_phi"])
    torch.save(checkpoint, out)
    return out


def test_a_schema_1_checkpoint_still_gives_its_teacher_through_teacher_init(data_bin, saved_run, tmp_path):
    old = schema1(saved_run, tmp_path / "old.pt")
    train(data_bin, tmp_path / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "1",
          "--teacher-update-interval", "0", "--teacher-init", str(old))
    kept = teacher_state(tmp_path / "ckpt" / "checkpoint_last.pt")["controller"]["teacher"]["state"]
    original = torch.load(old, map_location="cpu", weights_only=True)["extra_state"]["L2TTranslationTask"]["teacher"]
    assert kept.keys() == original.keys() and all(torch.equal(kept[k], original[k]) for k in kept)


@pytest.mark.parametrize("case", ["truncated_checkpoint_last", "other_dictionary", "schema_1_teacher"])
def test_resuming_from_a_checkpoint_that_cannot_serve_gives_one_line_error(data_bin, saved_run, tmp_path, case):
    save_dir = tmp_path / "ckpt"
    save_dir.mkdir()
    if case == "truncated_checkpoint_last":
        data, expected = data_bin, "truncated or corrupt"
        truncated(saved_run, save_dir / "checkpoint_last.pt")
    elif case == "other_dictionary":
        data, expected = binarize(tmp_path / "other", 300), "target dictionary of"
        shutil.copy(saved_run, save_dir / "checkpoint_last.pt")
    else:
        data, expected = data_bin, "saved before the teacher checkpoint schema 2"
        schema1(saved_run, save_dir / "checkpoint_last.pt")
    before = (save_dir / "checkpoint_last.pt").read_bytes()
    done = train(data, save_dir, "--criterion", "l2t_dynamic", "--max-update", "2", check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-l2t error:") and expected in last, last
    assert (save_dir / "checkpoint_last.pt").read_bytes() == before  # left as it was
    assert [p.name for p in save_dir.iterdir()] == ["checkpoint_last.pt"]
