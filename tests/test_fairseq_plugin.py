"""The fairseq plugin through fairseq's own command-line tools, on the committed
Spanish-English Bible fixture (public domain)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")
from hypergrad_helpers import relative_error  # noqa: E402

import fairseq_l2t.fairseq_plugin.checkpoint_safety  # noqa: E402,F401  (weights-only loading of fairseq files)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURE = REPO / "tests" / "fixtures" / "bible_es_en"
TINY_TRANSFORMER = ["--arch", "transformer_iwslt_de_en", "--encoder-layers", "1", "--decoder-layers", "1",
                    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                    "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads",
                    "2", "--share-all-embeddings"]
TINY_LSTM = ["--arch", "lstm", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32",
             "--decoder-embed-dim", "32", "--encoder-hidden-size", "32", "--decoder-hidden-size", "32",
             "--decoder-out-embed-dim", "32"]
COMMON = ["--user-dir", str(REPO / "fairseq_l2t"), "--task", "l2t_translation", "--optimizer", "adam",
          "--lr", "1e-3", "--max-tokens", "1000", "--cpu", "--no-progress-bar", "--seed", "1", "--log-interval", "1",
          "--no-epoch-checkpoints", "--num-workers", "0"]


def binarize(out: Path, vocab: int) -> Path:
    subprocess.run([sys.executable, str(REPO / "scripts" / "nmt_data" / "binarize.py"), str(FIXTURE), str(out),
                    "--src", "es", "--tgt", "en", "--vocab-size", str(vocab), "--force"],
                   check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory) -> Path:
    return binarize(tmp_path_factory.mktemp("bible") / "bin", 400)


def train(data: Path, save_dir: Path, *extra: str, arch=TINY_TRANSFORMER, check: bool = True):
    cmd = [str(BIN / "fairseq-train"), str(data), *COMMON, *arch, "--save-dir", str(save_dir), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"fairseq-train failed:\n{done.stderr[-3000:]}")
    return done


def teacher_state(checkpoint: Path) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return state["extra_state"]["L2TTranslationTask"]


def model_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("arch,extra", [(TINY_TRANSFORMER, []), (TINY_LSTM, ["--update-freq", "2"])],
                         ids=["transformer-shared-embeddings", "lstm-2-layers-update-freq-2"])
def test_train_with_l2t_dynamic_then_generate_and_score_with_sacrebleu(data_bin, tmp_path, arch, extra):
    done = train(data_bin, tmp_path / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "4", *extra,
                 "--teacher-update-interval", "2", "--lookahead-steps", "2", "--eval-bleu",
                 "--eval-bleu-remove-bpe", "sentencepiece", "--eval-bleu-args", '{"beam": 1, "max_len_b": 10}',
                 "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric", arch=arch)
    log = done.stdout + done.stderr
    assert re.search(r"valid on 'valid' subset .*\| bleu [\d.]+", log), log[-2000:]  # real BLEU, each epoch
    assert re.search(r"teacher_updates 2\b", log), log[-2000:]  # once per update, not per micro-batch
    assert "teacher_skipped 0" in log
    assert re.search(r"\| loss [-\d.]+ \| nll_loss [\d.]+ \| ppl [\d.]+", log)
    generated = subprocess.run(
        [str(BIN / "fairseq-generate"), str(data_bin), "--user-dir", str(REPO / "fairseq_l2t"),
         "--task", "l2t_translation", "--path", str(tmp_path / "ckpt" / "checkpoint_last.pt"), "--cpu",
         "--beam", "2", "--max-len-b", "20", "--batch-size", "32", "--scoring", "sacrebleu",
         "--remove-bpe", "sentencepiece"], capture_output=True, text=True)
    assert generated.returncode == 0, generated.stderr[-3000:]
    score = re.search(r"BLEU = ([\d.]+)", generated.stdout + generated.stderr)
    assert score is not None and 0.0 <= float(score.group(1)) <= 100.0
    translated = int(re.search(r"Translated ([\d,]+) sentences", generated.stderr).group(1).replace(",", ""))
    assert len(re.findall(r"^H-\d+\t", generated.stdout, flags=re.M)) == translated >= 50


def test_teacher_moves_only_through_the_dev_reward(data_bin, tmp_path):
    short = train(data_bin, tmp_path / "a", "--criterion", "l2t_dynamic", "--max-update", "2",
                  "--teacher-update-interval", "0")
    long = train(data_bin, tmp_path / "b", "--criterion", "l2t_dynamic", "--max-update", "6",
                 "--teacher-update-interval", "0")
    assert short.returncode == long.returncode == 0
    frozen_a = teacher_state(tmp_path / "a" / "checkpoint_last.pt")["controller"]["teacher"]["state"]
    frozen_b = teacher_state(tmp_path / "b" / "checkpoint_last.pt")["controller"]["teacher"]["state"]
    student_a = model_state(tmp_path / "a" / "checkpoint_last.pt")
    student_b = model_state(tmp_path / "b" / "checkpoint_last.pt")
    # the student trained on the teacher's loss for 4 more updates; the teacher did not move
    assert any(not torch.equal(student_a[k], student_b[k]) for k in student_a)
    assert all(torch.equal(frozen_a[k], frozen_b[k]) for k in frozen_a)
    # fairseq saw no criterion parameters, so the student's optimizer holds only the model's
    checkpoint = torch.load(tmp_path / "b" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["criterion"] is None
    # with reward updates, the same run moves the teacher
    train(data_bin, tmp_path / "c", "--criterion", "l2t_dynamic", "--max-update", "6", "--teacher-update-interval", "2")
    taught = teacher_state(tmp_path / "c" / "checkpoint_last.pt")
    assert taught["controller"]["updates"] == 3
    assert any(not torch.equal(taught["controller"]["teacher"]["state"][k], frozen_b[k]) for k in frozen_b)


def test_a_well_posed_teacher_learns_and_even_adversarial_keeps_the_nmt_loss_non_negative(data_bin, tmp_path):
    """soft_target_lowrank, starting exactly at label smoothing 0.1, runs with no floor and learns; the same
    teacher with every parameter pushed to magnitude 30 (the loss scales' to magnitude 1: exp(30) would overflow,
    a bound above, not below) still hands the student a loss >= 0 on real batches."""
    well_posed = ["--criterion", "l2t_dynamic", "--teacher-structure", "soft_target_lowrank", "--teacher-smoothing",
                  "0.1"]
    train(data_bin, tmp_path / "ls", *well_posed, "--max-update", "2", "--teacher-update-interval", "1")
    saved = tmp_path / "ls" / "checkpoint_last.pt"
    assert teacher_state(saved)["controller"]["updates"] == 2
    checkpoint = torch.load(saved, map_location="cpu", weights_only=True)
    teacher = checkpoint["extra_state"]["L2TTranslationTask"]["controller"]["teacher"]["state"]
    generator = torch.Generator().manual_seed(0)
    for name, value in teacher.items():
        magnitude = 1.0 if name.endswith("log_scale") else 30.0
        teacher[name] = magnitude * torch.randn(value.shape, generator=generator, dtype=value.dtype)
    torch.save(checkpoint, tmp_path / "adversarial.pt")
    done = train(data_bin, tmp_path / "adversarial", *well_posed, "--max-update", "3", "--teacher-update-interval",
                 "0", "--teacher-init", str(tmp_path / "adversarial.pt"))
    losses = [float(x) for x in re.findall(r"\| loss (-?[\d.]+|nan|inf)", done.stdout + done.stderr)]
    assert len(losses) >= 2 and min(losses) >= 0, losses


@pytest.mark.parametrize("arch", [TINY_TRANSFORMER, TINY_LSTM], ids=["transformer", "lstm"])
def test_the_cheap_teacher_update_reuses_the_real_step_and_moves_the_teacher_as_the_double_backward_does(
        data_bin, tmp_path, arch):
    """One lookahead step: the one_step engine with the real update's gradient (the default) and the stored
    engine's double backward give the same hypergradient (plain SGD teacher, no clipping: the teacher's move
    is the hypergradient); --lookahead-tangent finite_difference comes close to it; --lookahead-tokens takes a
    part of the batch, so another one.  The LSTM's packed sequences have no forward-mode derivative: there the
    engine takes its double-backward product."""
    common = ["--criterion", "l2t_dynamic", "--dropout", "0", "--max-update", "1", "--teacher-update-interval", "1",
              "--teacher-optimizer", "sgd", "--teacher-lr", "1e5", "--teacher-max-grad-norm", "0",
              "--teacher-structure", "soft_target_lowrank", "--teacher-smoothing", "0.1"]
    settings = {"frozen": ["--teacher-update-interval", "0"], "default": [],
                "stored": ["--lookahead-engine", "stored"], "part": ["--lookahead-tokens", "60"],
                "differences": ["--lookahead-tangent", "finite_difference"]}
    teachers, logs = {}, {}
    for name, extra in settings.items():
        done = train(data_bin, tmp_path / name, *common, *extra, arch=arch)
        logs[name] = done.stdout + done.stderr
        state = teacher_state(tmp_path / name / "checkpoint_last.pt")["controller"]["teacher"]["state"]
        teachers[name] = torch.cat([v.reshape(-1).double() for v in state.values()])
    assert "one_step engine, reusing the real update's gradient" in logs["default"]
    assert "stored engine" in logs["stored"]
    assert "reusing the real update's gradient, finite_difference tangent" in logs["differences"]
    moved = {name: teachers[name] - teachers["frozen"] for name in ("default", "stored", "part", "differences")}
    assert moved["stored"].abs().max() > 1e-2
    assert relative_error(moved["default"], moved["stored"]) < 1e-3
    assert 0 < relative_error(moved["differences"], moved["stored"]) < 1e-2
    assert relative_error(moved["part"], moved["stored"]) > 1e-2


@pytest.fixture(scope="module")
def other_vocab_teacher(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other")
    other = binarize(root / "bin", 300)
    train(other, root / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "1", "--teacher-update-interval", "1")
    return root / "ckpt" / "checkpoint_last.pt"


@pytest.mark.parametrize("case", ["missing_reward_subset", "test_as_reward", "unsupported_arch",
                                  "criterion_without_task", "teacher_vocabulary_mismatch"])
def test_bad_input_gives_one_line_error(data_bin, tmp_path, other_vocab_teacher, case):
    extra, arch, expected = {
        "missing_reward_subset": (["--reward-subset", "dev2"], TINY_TRANSFORMER, "--reward-subset dev2 not found"),
        "test_as_reward": (["--reward-subset", "test"], TINY_TRANSFORMER, "must never see the test set"),
        "unsupported_arch": ([], ["--arch", "fconv_iwslt_de_en"], "supports LSTM and Transformer"),
        "criterion_without_task": (["--task", "translation"], TINY_TRANSFORMER, "needs --task l2t_translation"),
        "teacher_vocabulary_mismatch": (["--teacher-init", str(other_vocab_teacher)], TINY_TRANSFORMER,
                                        "target types but this dictionary has"),
    }[case]
    done = train(data_bin, tmp_path / "ckpt", "--criterion", "l2t_dynamic", "--max-update", "2", *extra, arch=arch,
                 check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-l2t error:") and expected in last, last
    assert not (tmp_path / "ckpt" / "checkpoint_last.pt").exists()
