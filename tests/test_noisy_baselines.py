"""The noisy-label baselines against their formulas on hand-made cases: the generalised cross-entropy, Gold Loss
Correction (its estimator on a known transition, its loss), learning to reweight examples (against a brute-force
one-step check), and the paired statistics that judge them."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypergrad_helpers import NUM_CLASSES, NUM_INPUTS, tiny_mlp
from torch import nn

from fairseq_l2t.example_weights import gradient_alignment, lookahead_example_weights
from fairseq_l2t.functional_student import FunctionalStudent
from fairseq_l2t.state_features import StudentState
from image_cls.experiments.paired_stats import mcnemar_one_sided, paired_summary
from image_cls.training.gold_loss_correction import estimate_transition
from image_cls.training.student_losses import StudentLoss

STATE = StudentState(4, 10)


def test_gce_is_one_minus_p_to_the_q_over_q():
    lprobs = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], dtype=torch.float64))
    target = torch.tensor([0, 2])
    expected = ((1 - 0.5 ** 0.5) / 0.5 + (1 - 0.1 ** 0.5) / 0.5) / 2
    assert StudentLoss("gce", gce_q=0.5)(lprobs, target, STATE).item() == pytest.approx(expected, rel=1e-12)
    assert StudentLoss("gce", gce_q=1.0)(lprobs, target, STATE).item() == pytest.approx((0.5 + 0.9) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="q must be in"):
        StudentLoss("gce", gce_q=0.0)


def test_glc_loss_is_minus_the_log_of_the_corrected_probability_of_the_noisy_label():
    transition = torch.tensor([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]], dtype=torch.float64)
    probs = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    # (C^T p)_1 = 0.7 * 0.4 + 0.2 * 1.0 + 0.1 * 0.1 = 0.49
    loss = StudentLoss("glc", transition=transition)(probs.log(), torch.tensor([1]), STATE)
    assert loss.item() == pytest.approx(-math.log(0.49), rel=1e-12)


class _KnownPredictions(nn.Module):
    """Input: a one-hot true class; output: logits whose softmax is that row of a known matrix."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(matrix.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.logits


def test_glc_estimator_recovers_a_known_transition_from_trusted_examples():
    truth = torch.softmax(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 0])
    batches = [(F.one_hot(labels[:5], 4).double(), labels[:5]), (F.one_hot(labels[5:], 4).double(), labels[5:])]
    torch.testing.assert_close(estimate_transition(_KnownPredictions(truth), batches, 4), truth, rtol=1e-12, atol=1e-12)
    # a model whose predictions vary within a class: the row is their mean
    mixed = [(torch.cat([F.one_hot(torch.tensor([0]), 4).double(), torch.zeros(1, 4, dtype=torch.float64)]),
              torch.tensor([0, 0])), (F.one_hot(torch.tensor([1, 2, 3]), 4).double(), torch.tensor([1, 2, 3]))]
    estimate = estimate_transition(_KnownPredictions(truth), mixed, 4)
    torch.testing.assert_close(estimate[0], (truth[0] + torch.full((4,), 0.25, dtype=torch.float64)) / 2)
    with pytest.raises(ValueError, match="no image of class 3"):
        estimate_transition(_KnownPredictions(truth), [(F.one_hot(labels[:3], 4).double(), labels[:3])], 4)


def reweighting_case(seed: int = 0):
    torch.manual_seed(seed)
    module = tiny_mlp()
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(7, NUM_INPUTS, generator=generator, dtype=torch.float64)
    target = torch.randint(0, NUM_CLASSES, (7,), generator=generator)
    trusted = torch.randn(5, NUM_INPUTS, generator=generator, dtype=torch.float64)
    trusted_target = torch.randint(0, NUM_CLASSES, (5,), generator=generator)
    student = FunctionalStudent(module)
    snapshot = student.snapshot()
    return student, snapshot, inputs, target, trusted, trusted_target


def test_l2rw_weights_match_a_brute_force_one_step_lookahead():
    """-d M(w - lr sum_i eps_i grad l_i) / d eps_i at eps = 0, by central differences of the real step, over lr."""
    student, snapshot, inputs, target, trusted, trusted_target = reweighting_case()
    lr, h = 0.1, 1e-6
    params = tuple(p.detach().requires_grad_() for p in snapshot.params)

    def trusted_loss(weights: torch.Tensor) -> float:
        losses = F.cross_entropy(student.logits(params, dict(snapshot.buffers), inputs, train=True), target,
                                 reduction="none")
        grads = torch.autograd.grad((weights * losses).sum(), params)
        stepped = tuple(p.detach() - lr * g for p, g in zip(params, grads))
        with torch.no_grad():
            return F.cross_entropy(student.logits(stepped, dict(snapshot.buffers), trusted, train=False),
                                   trusted_target).item()

    brute = torch.zeros(len(target), dtype=torch.float64)
    for i in range(len(target)):
        bump = torch.zeros(len(target), dtype=torch.float64)
        bump[i] = h
        brute[i] = -(trusted_loss(bump) - trusted_loss(-bump)) / (2 * h) / lr
    alignment = gradient_alignment(student, snapshot.params, snapshot.buffers, inputs, target, trusted, trusted_target)
    torch.testing.assert_close(alignment, brute, rtol=1e-6, atol=1e-9)  # central differences: O(h^2) in float64
    assert (brute > 0).any() and (brute < 0).any()  # both signs occur: the clamp matters
    weights = lookahead_example_weights(student, snapshot.params, snapshot.buffers, inputs, target, trusted,
                                        trusted_target)
    expected = brute.clamp_min(0) / brute.clamp_min(0).sum()
    torch.testing.assert_close(weights, expected, rtol=1e-6, atol=1e-9)


def test_l2rw_weights_are_all_zero_when_no_example_helps_and_the_loss_uses_them():
    student, snapshot, inputs, target, trusted, trusted_target = reweighting_case(3)
    alignment = gradient_alignment(student, snapshot.params, snapshot.buffers, inputs, target, trusted, trusted_target)
    hurting = alignment < 0
    weights = lookahead_example_weights(student, snapshot.params, snapshot.buffers, inputs[hurting], target[hurting],
                                        trusted, trusted_target)
    assert hurting.any() and torch.equal(weights, torch.zeros_like(weights))
    lprobs = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=torch.float64))
    loss = StudentLoss("l2rw")(lprobs, torch.tensor([0, 1]), STATE, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert loss.item() == pytest.approx(-(0.25 * math.log(0.5) + 0.75 * math.log(0.8)), rel=1e-12)
    with pytest.raises(ValueError, match="example weights"):
        StudentLoss("l2rw")(lprobs, torch.tensor([0, 1]), STATE)


def test_mcnemar_is_the_binomial_tail_of_the_discordant_images():
    assert mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_one_sided(5, 0) == pytest.approx(1 / 32)
    assert mcnemar_one_sided(3, 2) == pytest.approx((10 + 5 + 1) / 32)  # P(X >= 3), X ~ Bin(5, 1/2)
    assert mcnemar_one_sided(0, 4) == 1.0
    assert mcnemar_one_sided(30, 10) < 0.01 < mcnemar_one_sided(12, 8)


def test_paired_summary_is_a_t_interval_of_per_seed_differences():
    out = paired_summary([-1.0, -2.0, -3.0, 0.0, 1.0])
    assert out["mean_difference"] == -1.0 and out["wins"] == 3 and out["ties"] == 1
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4 degrees of freedom) * s / sqrt(n)
    assert out["ci95"] == pytest.approx([-1.0 - half, -1.0 + half])
    assert paired_summary([0.5])["ci95"] is None
