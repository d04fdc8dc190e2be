"""The GPU path: the engines agree on cuda with their CPU results, and the image CLIs run end to end with
--device cuda.  Skipped where torch sees no CUDA device (every check here needs one)."""
import pytest
import torch
from hypergrad_helpers import make_unroll, perturbed_teacher, relative_error, tiny_mlp

from fairseq_l2t.hypergradient import hypergradient
from image_cls.cli import evaluate, train_student, train_teacher

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def to_cuda(unroll):
    """The same unroll with its student, teacher and data on the GPU (float64, so CPU and GPU agree closely)."""
    cuda = torch.device("cuda")
    unroll.student.module.to(cuda)
    unroll.teacher.to(cuda)
    batch_at = unroll.batch_at
    unroll.batch_at = lambda t: tuple(x.to(cuda) for x in batch_at(t))
    unroll.dev_batches = [(x.to(cuda), y.to(cuda)) for x, y in unroll.dev_batches]
    return unroll


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1).cpu() for g in grads])


@pytest.mark.parametrize("structure", ["dense", "soft_target"])
def test_engines_agree_on_cuda_and_with_the_cpu(structure):
    cpu = make_unroll(tiny_mlp(norm=True), perturbed_teacher(structure), steps=9)
    reference = hypergradient(cpu, cpu.student.snapshot(), "unrolled")
    gpu = to_cuda(make_unroll(tiny_mlp(norm=True), perturbed_teacher(structure), steps=9))
    start = gpu.student.snapshot()
    for engine, snapshots in (("unrolled", 8), ("stored", 8), ("checkpointed", 2)):
        result = hypergradient(gpu, start, engine, snapshots=snapshots)
        assert all(g.is_cuda for g in result.teacher_grads), engine
        assert relative_error(flat(result.teacher_grads), flat(reference.teacher_grads)) < 1e-9, engine


def test_image_clis_run_on_cuda(tmp_path):
    common = ["--model", "lenet", "--no-progress", "--seed", "1", "--device", "cuda"]
    teacher = train_teacher.main(common + ["--rounds", "1", "--steps-per-round", "20", "--episode-steps", "10",
                                           "--structure", "soft_target", "--out", str(tmp_path / "teacher")])
    assert teacher["episodes"] == 2 and teacher["skipped_non_finite"] == 0
    taught = train_student.main(common + ["--loss", "teacher", "--teacher", str(tmp_path / "teacher" / "teacher.pt"),
                                          "--online-every", "10", "--steps", "30", "--eval-every", "10",
                                          "--out", str(tmp_path / "student")])
    assert 0.0 <= taught["test_error"] < 0.9
    evaluated = evaluate.main([str(tmp_path / "student" / "checkpoint.pt"), "--device", "cuda"])
    assert evaluated["error"] == pytest.approx(taught["test_error"], abs=1e-6)
