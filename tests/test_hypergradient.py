"""Every engine against float64 finite differences and naive autograd unrolling."""
import copy
import dataclasses
import math

import pytest
import torch
from hypergrad_helpers import NUM_CLASSES, make_unroll, perturbed_teacher, relative_error, tiny_mlp
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from fairseq_l2t.hypergradient import _binomial_split, hypergradient, one_step_hypergradient, rng_state, run_unroll
from fairseq_l2t.state_features import StudentState

# equality claims: the engines agree (float64)
pytestmark = pytest.mark.equality

ENGINE_CASES = [("stored", 8), ("checkpointed", 1), ("checkpointed", 2), ("checkpointed", 3)]


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def finite_difference(unroll, start, eps=1e-6, replay=True):
    """Central differences of M(theta), one teacher coordinate at a time.

    replay=True holds the state features at their recorded values, as the
    hypergradient's definition does (features are data, not a gradient path).
    """
    if replay:
        unroll = copy.copy(unroll)
        unroll.features = hypergradient(unroll, start, "stored").features
    theta = parameters_to_vector(unroll.teacher.parameters()).detach().clone()
    out = torch.zeros_like(theta)
    for i in range(theta.numel()):
        values = []
        for sign in (1, -1):
            shifted = theta.clone()
            shifted[i] += sign * eps
            vector_to_parameters(shifted, unroll.teacher.parameters())
            values.append(run_unroll(unroll, start)[0])
        out[i] = (values[0] - values[1]) / (2 * eps)
    vector_to_parameters(theta, unroll.teacher.parameters())
    return out


@pytest.mark.parametrize("structure,squash,objective,form,seed", [
    ("dense", False, "cross_entropy", "gate", 1),
    ("dense", True, "smooth_error", "gate", 1),
    ("lowrank", False, "expected_error", "gate", 1),
    ("dense", False, "cross_entropy", "attention", 1),
    ("soft_target", False, "smooth_error", "gate", 2),
    ("soft_target", False, "cross_entropy", "attention", 1),
    ("smoothing", False, "expected_error", "attention", 1),
    ("soft_target_lowrank", False, "cross_entropy", "gate", 1),
    ("soft_target_fixed_scale", False, "calibrated_cross_entropy", "gate", 1),
    ("smoothing", False, "calibrated_cross_entropy", "attention", 2),
])
def test_every_engine_matches_finite_differences_and_naive_unrolling(structure, squash, objective, form, seed):
    torch.manual_seed(0)  # the student's and the teacher's gate init do not depend on the order the cases run in
    module = tiny_mlp()
    # on random labels the student ranks no better than chance, and the calibrated objective is flat at log C
    unroll = make_unroll(module, perturbed_teacher(structure, squash, seed, form), steps=6, objective=objective,
                         learnable=objective == "calibrated_cross_entropy")
    start = unroll.student.snapshot()
    if "eps" in unroll.teacher.base:  # finite differences need the smoothing mass inside the clamp's (0, 1)
        for step in range(unroll.steps):
            eps = unroll.teacher(hypergradient(unroll, start, "stored").features[step])["eps"]
            assert ((eps > 0.01) & (eps < 0.99)).all()
    reference = flat(hypergradient(unroll, start, "unrolled").teacher_grads)
    fd = finite_difference(unroll, start)
    assert reference.abs().max() > 1e-6
    assert relative_error(reference, fd) < 1e-4
    for engine, snapshots in ENGINE_CASES:
        result = hypergradient(unroll, start, engine, snapshots=snapshots)
        grads = flat(result.teacher_grads)
        assert relative_error(grads, fd) < 1e-4, engine
        assert relative_error(grads, reference) < 1e-10, engine


@pytest.mark.parametrize("structure,squash,objective,form", [
    ("dense", False, "cross_entropy", "gate"),
    ("dense", True, "smooth_error", "attention"),
    ("lowrank", False, "expected_error", "gate"),
    ("soft_target", False, "cross_entropy", "attention"),
    ("smoothing", False, "cross_entropy", "gate"),
    ("soft_target_lowrank", False, "cross_entropy", "gate"),
    ("soft_target_fixed_scale", False, "expected_error", "gate"),
])
def test_one_step_engine_matches_finite_differences_and_naive_unrolling(structure, squash, objective, form):
    torch.manual_seed(0)
    unroll = make_unroll(tiny_mlp(dropout=0.3), perturbed_teacher(structure, squash, 1, form), steps=1,
                         objective=objective, rng_seed=5)
    start = unroll.student.snapshot()
    reference = hypergradient(unroll, start, "unrolled")
    fd = finite_difference(unroll, start)
    result = hypergradient(unroll, start, "one_step")
    assert flat(reference.teacher_grads).abs().max() > 1e-6
    assert relative_error(flat(result.teacher_grads), fd) < 1e-4
    assert relative_error(flat(result.teacher_grads), flat(reference.teacher_grads)) < 1e-10
    assert result.dev_objective == pytest.approx(reference.dev_objective, rel=1e-12)
    for a, b in zip(result.final.params + result.final.velocity, reference.final.params + reference.final.velocity):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.tracker.features(torch.float64), reference.tracker.features(torch.float64))


@pytest.mark.parametrize("structure,squash,objective", [
    ("soft_target_lowrank", False, "cross_entropy"), ("dense", True, "smooth_error"),
    ("lowrank", False, "expected_error"),
])
def test_one_step_engine_by_central_differences_is_close_to_exact(structure, squash, objective):
    """tangent="finite_difference": two plain forwards with the same masks instead of forward mode; in float64
    its step leaves an error far below the finite-difference check's, and the step's result is the exact one."""
    torch.manual_seed(0)
    unroll = make_unroll(tiny_mlp(dropout=0.3), perturbed_teacher(structure, squash, 1), steps=1,
                         objective=objective, rng_seed=5)
    start = unroll.student.snapshot()
    exact = hypergradient(unroll, start, "one_step")
    by_differences = one_step_hypergradient(unroll, start, tangent="finite_difference")
    error = relative_error(flat(by_differences.teacher_grads), flat(exact.teacher_grads))
    assert 0 < error < 1e-7  # an approximation, and a good one
    assert by_differences.dev_objective == exact.dev_objective
    for a, b in zip(by_differences.final.params, exact.final.params):
        assert torch.equal(a, b)
    torch.testing.assert_close(by_differences.tracker.features(torch.float64), exact.tracker.features(torch.float64))
    with pytest.raises(ValueError, match="unknown tangent"):
        one_step_hypergradient(unroll, start, tangent="backward")


def test_one_step_engine_with_a_floored_loss_matches_naive_unrolling():
    """The floored bilinear loss is not affine in the log-probabilities: the engine's second-derivative path."""
    teacher = perturbed_teacher("lowrank")
    teacher.log_prob_floor = math.log(0.3)  # high enough that the floor bends the tiny student's loss
    unroll = make_unroll(tiny_mlp(), teacher, steps=1)
    start = unroll.student.snapshot()
    reference = flat(hypergradient(unroll, start, "unrolled").teacher_grads)
    assert relative_error(flat(hypergradient(unroll, start, "one_step").teacher_grads), reference) < 1e-10
    assert relative_error(reference, finite_difference(unroll, start)) < 1e-4


def test_one_step_engine_reuses_a_real_step_and_replays_its_dropout_masks():
    """The gradient of a real training step (module call, its own dropout draw) handed in as the direction,
    with the generator state it drew from, gives the naive unrolling's hypergradient of that same step."""
    torch.manual_seed(0)
    module = tiny_mlp(dropout=0.3)
    teacher = perturbed_teacher("soft_target")
    unroll = make_unroll(module, teacher, steps=1, rng_seed=11)
    start = unroll.student.snapshot()
    reference = flat(hypergradient(unroll, start, "unrolled").teacher_grads)
    torch.manual_seed(11)  # the unroll draws step 0's masks from rng_seed + 0
    recorded = rng_state(torch.device("cpu"))
    inputs, target = unroll.batch_at(0)
    module.train()
    with torch.no_grad():
        phi = teacher(unroll.tracker.features(torch.float64))
    loss = teacher.loss(torch.log_softmax(module(inputs), -1), target, phi)
    direction = torch.autograd.grad(loss, [p for p in module.parameters()])
    torch.manual_seed(99)  # the replay, not the global generator, decides the masks
    unseeded = copy.copy(unroll)
    unseeded.rng_seed = None
    reused = one_step_hypergradient(unseeded, start, direction, recorded)
    assert relative_error(flat(reused.teacher_grads), reference) < 1e-10
    # other masks give another hypergradient: the replay is what makes it exact
    other = one_step_hypergradient(unseeded, start, direction, None)
    assert relative_error(flat(other.teacher_grads), reference) > 1e-3


def test_engines_agree_on_longer_unrolls_with_few_snapshots():
    unroll = make_unroll(tiny_mlp(), perturbed_teacher(), steps=23)
    start = unroll.student.snapshot()
    stored = hypergradient(unroll, start, "stored")
    for snapshots in (1, 2, 4):
        checkpointed = hypergradient(unroll, start, "checkpointed", snapshots=snapshots)
        assert relative_error(flat(checkpointed.teacher_grads), flat(stored.teacher_grads)) < 1e-10
        assert checkpointed.dev_objective == stored.dev_objective
        for a, b in zip(checkpointed.final.params, stored.final.params):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_batchnorm_student_matches_naive_unrolling():
    unroll = make_unroll(tiny_mlp(norm=True), perturbed_teacher(), steps=5)
    start = unroll.student.snapshot()
    reference = flat(hypergradient(unroll, start, "unrolled").teacher_grads)
    for engine, snapshots in ENGINE_CASES:
        result = hypergradient(unroll, start, engine, snapshots=snapshots)
        assert relative_error(flat(result.teacher_grads), reference) < 1e-10
    # the running statistics moved during the unroll
    assert not torch.equal(result.final.buffers["1.running_mean"], start.buffers["1.running_mean"])


def test_dropout_masks_are_replayed_in_the_reverse_pass():
    unroll = make_unroll(tiny_mlp(dropout=0.3), perturbed_teacher(), steps=5, rng_seed=7)
    start = unroll.student.snapshot()
    reference = flat(hypergradient(unroll, start, "unrolled").teacher_grads)
    fd = finite_difference(unroll, start)
    assert relative_error(reference, fd) < 1e-4
    for engine, snapshots in ENGINE_CASES:
        assert relative_error(flat(hypergradient(unroll, start, engine, snapshots).teacher_grads), reference) < 1e-10


def test_matches_finite_differences_of_the_real_procedure_when_features_do_not_move():
    """Zero the gate columns of the features that depend on the student's weights:
    then the true derivative of the whole procedure equals the hypergradient
    (every path through a moving feature is multiplied by a zero weight)."""
    teacher = perturbed_teacher()
    with torch.no_grad():
        teacher.gate.weight[:, 1:3] = 0  # train_loss, train_accuracy
    unroll = make_unroll(tiny_mlp(), teacher, steps=6)
    start = unroll.student.snapshot()
    fd = finite_difference(unroll, start, replay=False)
    analytic = flat(hypergradient(unroll, start, "stored").teacher_grads)
    assert relative_error(analytic, fd) < 1e-4


def test_engines_replay_the_per_class_and_confusion_features():
    """The optional feature groups move during the unroll; every engine must replay them as the naive one saw them."""
    tracker = StudentState(NUM_CLASSES, total_steps=12, extras=("confusion", "class_accuracy"))
    teacher = perturbed_teacher("soft_target", num_features=tracker.num_features)
    unroll = dataclasses.replace(make_unroll(tiny_mlp(), teacher, steps=5, learnable=True), tracker=tracker)
    start = unroll.student.snapshot()
    naive = hypergradient(unroll, start, "unrolled")
    reference = flat(naive.teacher_grads)
    assert relative_error(reference, finite_difference(unroll, start)) < 1e-4
    for engine, snapshots in ENGINE_CASES:
        assert relative_error(flat(hypergradient(unroll, start, engine, snapshots).teacher_grads), reference) < 1e-10
    first, last = naive.features[0], naive.features[-1]
    assert not torch.allclose(first[4:], last[4:])  # the extra features moved during the unroll
    gate_grad = naive.teacher_grads[[name for name, _ in teacher.named_parameters()].index("gate.weight")]
    assert gate_grad[:, 4:].abs().sum() > 0  # and the teacher reads them


def test_without_momentum_or_weight_decay():
    unroll = make_unroll(tiny_mlp(), perturbed_teacher(), steps=5, momentum=0.0, weight_decay=0.0)
    start = unroll.student.snapshot()
    fd = finite_difference(unroll, start)
    assert relative_error(flat(hypergradient(unroll, start, "stored").teacher_grads), fd) < 1e-4


def test_teacher_gradient_comes_only_from_the_dev_objective():
    module = tiny_mlp()
    unroll = make_unroll(module, perturbed_teacher(), steps=4)
    start = unroll.student.snapshot()
    base = flat(hypergradient(unroll, start, "stored").teacher_grads)
    # scaling the dev objective scales the teacher's gradient by the same factor
    doubled = copy.copy(unroll)
    doubled.dev_objective = lambda logits, target: 2 * unroll.dev_objective(logits, target)
    torch.testing.assert_close(flat(hypergradient(doubled, start, "stored").teacher_grads), 2 * base)
    # a dev objective blind to the student gives the teacher no gradient at all,
    # however much the student's training loss depends on the teacher
    blind = copy.copy(unroll)
    blind.dev_objective = lambda logits, target: torch.zeros_like(target, dtype=logits.dtype) + 0 * logits.sum().detach()
    for engine in ("unrolled", "stored", "checkpointed"):
        assert flat(hypergradient(blind, start, engine).teacher_grads).abs().max() == 0
    assert flat(hypergradient(dataclasses.replace(blind, steps=1), start, "one_step").teacher_grads).abs().max() == 0
    # the engines never write into .grad: only TeacherController.step does
    assert all(p.grad is None for p in unroll.teacher.parameters())


def test_binomial_split_stays_inside_the_segment():
    for length in range(2, 60):
        for snapshots in range(1, 6):
            assert 1 <= _binomial_split(length, snapshots) < length


def test_bad_arguments_are_refused():
    unroll = make_unroll(tiny_mlp(), perturbed_teacher(), steps=2)
    start = unroll.student.snapshot()
    with pytest.raises(ValueError, match="unknown hypergradient engine"):
        hypergradient(unroll, start, "forward")
    with pytest.raises(ValueError, match="at least 1 snapshot"):
        hypergradient(unroll, start, "checkpointed", snapshots=0)
    with pytest.raises(ValueError, match="one student step; this unroll has 2"):
        hypergradient(unroll, start, "one_step")
    empty = copy.copy(unroll)
    with pytest.raises(ValueError, match="no examples"):
        type(unroll)(**{**empty.__dict__, "dev_batches": []})


def test_functional_calls_keep_weights_shared_by_shared_modules_tied():
    """fairseq's --share-all-embeddings: one embedding module in encoder and decoder, tied to the output."""
    from torch import nn

    from fairseq_l2t.functional_student import FunctionalStudent

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            embedding = nn.Embedding(5, 3)
            self.encoder, self.decoder = nn.Module(), nn.Module()
            self.encoder.embed, self.decoder.embed = embedding, embedding
            self.decoder.out = nn.Linear(3, 5, bias=False)
            self.decoder.out.weight = embedding.weight

        def forward(self, tokens):
            return self.decoder.out(self.encoder.embed(tokens))

    module = Tied()
    student = FunctionalStudent(module)
    snapshot = student.snapshot()
    student.logits(snapshot.params, snapshot.buffers, torch.tensor([1, 2]), train=True)
    assert module.encoder.embed.weight is module.decoder.out.weight
    assert len(list(module.parameters())) == 1
