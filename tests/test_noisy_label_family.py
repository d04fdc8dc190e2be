"""The corrected loss family for noisy labels: exact members, bounded below, finite derivatives where a teacher
starts, and every hypergradient engine against float64 finite differences and naive unrolling."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypergrad_helpers import NUM_CLASSES, make_unroll, relative_error, tiny_mlp
from test_hypergradient import ENGINE_CASES, finite_difference, flat

from fairseq_l2t.hypergradient import hypergradient
from fairseq_l2t.loss_family import dynamic_loss
from fairseq_l2t.loss_structures import CorrectedStructure, SmoothingStructure, build_structure
from fairseq_l2t.robust_losses import corrected_log_probs, generalized_log
from fairseq_l2t.teacher import Teacher
from fairseq_l2t.teacher_spec import TeacherSpec, teacher_mismatch

# equality claims: the engines agree on the corrected family (float64)
pytestmark = pytest.mark.equality

C = 5


def batch(seed: int = 0, n: int = 23, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    lprobs = F.log_softmax(scale * torch.randn(n, C, generator=generator, dtype=torch.float64), -1)
    return lprobs, torch.randint(0, C, (n,), generator=generator)


def stochastic(seed: int = 1) -> torch.Tensor:
    return torch.softmax(torch.randn(C, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), 1)


def losses(structure, lprobs, target, params=None):
    params = structure.init_params(torch.float64) if params is None else params
    return dynamic_loss(lprobs, target, structure, params, squash=False, reduction="none")


# float64: log(exp(x)) and the matmul's sums round at about 1e-16 relative
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def test_its_members_are_exactly_ce_label_smoothing_gce_and_forward_correction():
    lprobs, target = batch()
    p_y = lprobs.gather(1, target[:, None]).squeeze(1).exp()
    torch.testing.assert_close(losses(CorrectedStructure(C), lprobs, target), F.nll_loss(lprobs, target,
                                                                                         reduction="none"), **EXACT)
    smoothing = SmoothingStructure(C, 0.2)
    torch.testing.assert_close(losses(CorrectedStructure(C, 0.2), lprobs, target),
                               losses(smoothing, lprobs, target), **EXACT)
    torch.testing.assert_close(losses(CorrectedStructure(C, robustness=0.7), lprobs, target), (1 - p_y ** 0.7) / 0.7,
                               **EXACT)
    transition = stochastic()
    noisy = (lprobs.exp() @ transition).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(losses(CorrectedStructure(C, transition=transition.tolist()), lprobs, target),
                               -noisy.log(), **EXACT)
    q1 = losses(CorrectedStructure(C, robustness=1.0), lprobs, target)  # q = 1: the mean absolute error's 1 - p_y
    torch.testing.assert_close(q1, 1 - p_y, **EXACT)


def test_every_member_is_bounded_below_and_finite_for_extreme_teachers_and_students():
    structure = CorrectedStructure(C)
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        params = {k: 30 * torch.randn(v.shape, generator=generator, dtype=torch.float64)
                  for k, v in structure.init_params(torch.float64).items()}
        params["log_scale"] = torch.randn(1, generator=generator, dtype=torch.float64)
        lprobs, target = batch(int(torch.randint(0, 1000, (1,), generator=generator)), scale=300.0)  # p down to e^-900
        values = losses(structure, lprobs, target, params)
        assert torch.isfinite(values).all() and (values >= 0).all()


def test_the_generalised_log_is_the_log_at_q_0_and_smooth_across_its_series():
    logs = -torch.linspace(1e-6, 30, 500, dtype=torch.float64)
    assert torch.equal(generalized_log(logs, 0.0), logs)
    q = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(generalized_log(logs, q).sum(), q)
    torch.testing.assert_close(slope, (logs ** 2 / 2).sum().reshape(1), **EXACT)  # d/dq (e^{ql} - 1) / q at 0
    for l in (-1.0, -5.0):  # either side of the series' threshold |q l| = 1e-4 the two formulas agree
        for q in (0.99e-4 / -l, 1.01e-4 / -l, 0.3):
            exact = math.expm1(q * l) / q
            assert generalized_log(torch.tensor(l, dtype=torch.float64), q).item() == pytest.approx(exact, rel=1e-13)


def test_corrected_log_probs_keep_a_finite_derivative_at_the_identity():
    """Where a teacher starts at cross-entropy (T = I), d log (T^T p)_k / d T[i, k] = p_i / p_k."""
    lprobs, _ = batch(3, n=4)
    eye = torch.eye(C, dtype=torch.float64, requires_grad=True)
    corrected = corrected_log_probs(lprobs, eye)
    torch.testing.assert_close(corrected, lprobs, **EXACT)
    (grad,) = torch.autograd.grad(corrected[0, 2], eye)
    expected = torch.zeros(C, C, dtype=torch.float64)
    expected[:, 2] = (lprobs[0] - lprobs[0, 2]).exp()
    torch.testing.assert_close(grad, expected, **EXACT)
    deep = torch.full((1, C), -800.0, dtype=torch.float64)
    deep[0, 0] = 0.0
    assert torch.isfinite(corrected_log_probs(deep, torch.eye(C, dtype=torch.float64))).all()


def test_a_teacher_at_the_cross_entropy_end_gets_gradient_in_every_strength():
    """eps, q and every correction strength A start exactly at their clamp's bound 0; the gradient must reach them."""
    structure = CorrectedStructure(C)
    params = {k: v.requires_grad_() for k, v in structure.init_params(torch.float64).items()}
    lprobs, target = batch(4, scale=1.0)  # a mild student: with p_i / p_k up to e^30 the curvature defeats the check
    value = dynamic_loss(lprobs, target, structure, params, squash=False)
    grads = dict(zip(params, torch.autograd.grad(value, list(params.values()))))
    assert (grads["A"].diagonal() == 0).all() and (grads["A"] + torch.eye(C, dtype=torch.float64) != 0).all()
    for name in ("eps", "q", "A"):
        assert grads[name].abs().sum() > 1e-3, name
        h, at = 1e-6, []
        for k in (1, 2):  # one-sided, second order: the member exists only above the bound
            shifted = {n: v.detach().clone() for n, v in params.items()}
            shifted[name] = shifted[name] + k * h
            at.append(dynamic_loss(lprobs, target, structure, shifted, squash=False))
        slope = (-3 * value.detach() + 4 * at[0] - at[1]) / (2 * h)
        assert grads[name].sum().item() == pytest.approx(slope.item(), rel=1e-4), name


def corrected_teacher(seed: int = 1, num_features: int = 4, fixed_scale: bool = False) -> Teacher:
    """A corrected-family teacher inside the clamps' open intervals at every state (finite differences need that);
    with `fixed_scale`, one without the loss scale (the noisy table's `fixed-scale` protocol)."""
    transition = torch.softmax(2 * torch.randn(NUM_CLASSES, NUM_CLASSES, generator=torch.Generator().manual_seed(9),
                                               dtype=torch.float64), 1)
    structure = CorrectedStructure(NUM_CLASSES, 0.3, fixed_scale, robustness=0.4, transition=transition.tolist())
    teacher = Teacher(structure, num_features=num_features, num_gates=2).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        teacher.base["A"].add_(0.2 * torch.rand(teacher.base["A"].shape, generator=generator, dtype=torch.float64))
        for p in [*teacher.delta.values(), *teacher.gate.parameters()]:
            p.add_(0.1 * torch.randn(p.shape, generator=generator, dtype=torch.float64))
    return teacher


@pytest.mark.parametrize("objective,fixed_scale", [("cross_entropy", False), ("expected_error", False),
                                                   ("cross_entropy", True)])
def test_every_engine_matches_finite_differences_and_naive_unrolling(objective, fixed_scale):
    torch.manual_seed(0)
    unroll = make_unroll(tiny_mlp(), corrected_teacher(fixed_scale=fixed_scale), steps=6, objective=objective)
    start = unroll.student.snapshot()
    for features in hypergradient(unroll, start, "stored").features:
        phi = unroll.teacher(features)
        for name in ("eps", "q"):
            assert ((phi[name] > 0.01) & (phi[name] < 0.99)).all(), name
        assert (phi["A"] + torch.eye(NUM_CLASSES, dtype=torch.float64) > 0.01).all()
    reference = flat(hypergradient(unroll, start, "unrolled").teacher_grads)
    fd = finite_difference(unroll, start)
    assert reference.abs().max() > 1e-6
    assert relative_error(reference, fd) < 1e-4
    for engine, snapshots in ENGINE_CASES:
        assert relative_error(flat(hypergradient(unroll, start, engine, snapshots=snapshots).teacher_grads),
                              reference) < 1e-10, engine
    assert ("log_scale" in unroll.teacher.base) != fixed_scale
    one = make_unroll(tiny_mlp(), corrected_teacher(fixed_scale=fixed_scale), steps=1, objective=objective)
    one_start = one.student.snapshot()
    exact = flat(hypergradient(one, one_start, "unrolled").teacher_grads)
    assert relative_error(flat(hypergradient(one, one_start, "one_step").teacher_grads), exact) < 1e-10
    assert relative_error(exact, finite_difference(one, one_start)) < 1e-4


def test_config_round_trip_and_bad_transitions():
    structure = CorrectedStructure(C, 0.1, robustness=0.5, transition=stochastic().tolist())
    twin = build_structure(structure.config())
    assert twin.config() == structure.config()
    torch.testing.assert_close(twin.dense(twin.init_params(torch.float64)), stochastic(), **EXACT)
    with pytest.raises(ValueError, match="row-stochastic"):
        CorrectedStructure(C, transition=(2 * stochastic()).tolist())
    with pytest.raises(ValueError, match="5 x 5"):
        CorrectedStructure(C, transition=stochastic()[:3, :3].tolist())
    with pytest.raises(ValueError, match="robustness"):
        CorrectedStructure(C, robustness=1.5)
    with pytest.raises(ValueError, match="positive diagonal"):
        CorrectedStructure(C, transition=torch.eye(C, dtype=torch.float64).roll(1, 0).tolist())


def test_the_teacher_spec_builds_it_from_options_and_names_a_mismatch(tmp_path):
    path = tmp_path / "C.json"
    path.write_text(str(stochastic().tolist()))
    options = type("Options", (), {"teacher_structure": "corrected", "teacher_transition": str(path),
                                   "teacher_robustness": 0.3})()
    spec = TeacherSpec.from_options(options)
    teacher = spec.build(C, ("a", "b"))
    torch.testing.assert_close(teacher.structure.dense(teacher(torch.zeros(2, dtype=torch.float32))).double(),
                               stochastic(), rtol=1e-6, atol=1e-7)  # float32 teacher
    assert teacher_mismatch(teacher.config(), C, 2, spec) is None
    assert "was trained for 5 classes but this dataset has 4" in teacher_mismatch(teacher.config(), 4, 2)
    assert "uses loss structure" in teacher_mismatch(teacher.config(), C, 2, TeacherSpec("corrected"))
    with pytest.raises(ValueError, match="--teacher-robustness needs --teacher-structure corrected"):
        TeacherSpec("smoothing", robustness=0.2)
    with pytest.raises(ValueError, match="5 x 5"):
        TeacherSpec("corrected", transition=((1.0,),)).build(C, ("a",))
