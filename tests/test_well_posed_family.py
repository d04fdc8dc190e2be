"""The well-posed loss family: bounded below, minimised at a proper distribution, CE and LS exact members."""
import pytest
import torch
import torch.nn.functional as F

from fairseq_l2t.loss_family import dynamic_loss
from fairseq_l2t.loss_structures import (
    LowRankSoftTargetStructure,
    SmoothingStructure,
    SoftTargetStructure,
    build_structure,
)
from fairseq_l2t.teacher import Teacher

C = 6
KINDS = [SoftTargetStructure, SmoothingStructure, LowRankSoftTargetStructure]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.3])
def test_base_is_exactly_cross_entropy_or_label_smoothing(kind, epsilon):
    structure = kind(C, epsilon)
    logits = torch.randn(17, C, dtype=torch.float64)
    target = torch.randint(0, C, (17,))
    loss = dynamic_loss(F.log_softmax(logits, -1), target, structure, structure.init_params(torch.float64),
                        squash=False)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, label_smoothing=epsilon), rtol=1e-12, atol=1e-12)


def adversarial_params(structure, generator, magnitude=30.0):
    """Extreme teacher outputs: eps far outside [0, 1], huge B logits and scales."""
    return {k: magnitude * torch.randn(v.shape, generator=generator, dtype=torch.float64)
            for k, v in structure.init_params(torch.float64).items()} | \
        {"log_scale": torch.randn(structure.init_params()["log_scale"].shape, generator=generator,
                                  dtype=torch.float64)}


@pytest.mark.parametrize("kind", KINDS)
def test_every_member_is_bounded_below_by_the_targets_entropy(kind):
    """-score = a_y CE(q_y, p) >= a_y H(q_y) >= 0 for any teacher output and any student."""
    structure = kind(C)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        params = adversarial_params(structure, generator)
        W = structure.dense(params)
        assert (W >= 0).all()
        scale = W.sum(0)
        q = W / scale  # the target distribution of every class, as columns
        logits = 40 * torch.randn(64, C, generator=generator, dtype=torch.float64)  # confident students too
        target = torch.randint(0, C, (64,), generator=generator)
        losses = dynamic_loss(F.log_softmax(logits, -1), target, structure, params, squash=False, reduction="none")
        entropy = -(q * q.clamp_min(1e-300).log()).sum(0)
        assert (losses >= scale[target] * entropy[target] - 1e-9).all()
        assert (losses >= 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_the_loss_is_minimised_where_the_student_predicts_the_target_distribution(kind):
    """At p = q_y the gradient in the logits vanishes, and moving p (e.g. towards zero non-target mass) costs."""
    structure = kind(C)
    generator = torch.Generator().manual_seed(1)
    params = adversarial_params(structure, generator, magnitude=2.0)
    params["eps"] = 0.05 + 0.9 * torch.rand(params["eps"].shape, generator=generator, dtype=torch.float64)
    q = structure.dense(params) / structure.dense(params).sum(0)
    target = torch.arange(C)
    logits = q.T.log().clone().requires_grad_()  # row y predicts q_y exactly
    loss = dynamic_loss(F.log_softmax(logits, -1), target, structure, params, squash=False, reduction="sum")
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.abs().max() < 1e-10
    sharper = q.T.log() + 5 * F.one_hot(target, C)  # pushes the non-target probabilities down
    assert dynamic_loss(F.log_softmax(sharper, -1), target, structure, params, squash=False, reduction="sum") > loss


@pytest.mark.parametrize("kind", KINDS)
def test_structured_loss_is_the_dense_matrixs_loss_in_value_and_gradient(kind):
    """score (per distinct target, no C x C matrix) = -lprobs . W[:, y], and so are the teacher's gradients,
    on a batch whose targets repeat."""
    structure = kind(C, 0.1)
    generator = torch.Generator().manual_seed(6)
    params = {k: v.requires_grad_() for k, v in adversarial_params(structure, generator, magnitude=1.0).items()}
    lprobs = F.log_softmax(torch.randn(40, C, generator=generator, dtype=torch.float64), -1)
    target = torch.randint(0, C, (40,), generator=generator)
    structured = structure.score(lprobs, target, params)
    dense = (lprobs * structure.dense(params)[:, target].T).sum(-1)
    torch.testing.assert_close(structured, dense)
    weights = torch.rand(40, generator=generator, dtype=torch.float64)
    names = list(params)
    grads = torch.autograd.grad((structured * weights).sum(), [params[n] for n in names])
    dense_grads = torch.autograd.grad((dense * weights).sum(), [params[n] for n in names])
    for name, g, d in zip(names, grads, dense_grads):
        torch.testing.assert_close(g, d, msg=name)
    torch.testing.assert_close(structure.diagonal(params, target), structure.dense(params).diagonal()[target])


def test_adversarial_teacher_cannot_make_a_real_batch_loss_negative():
    """A teacher whose every parameter is pushed to extremes still hands out a loss >= 0 on real digits."""
    from image_cls.data.batches import BatchStream
    from image_cls.data.splits import load_splits
    from image_cls.training.models import build_model

    splits = load_splits("mnist5k")
    inputs, target = BatchStream(splits.train, 64, 0, splits.mean, splits.std, False).batch_at(0)
    lprobs = F.log_softmax(build_model("mlp", 10, 1, 28)(inputs), -1)
    teacher = Teacher(SoftTargetStructure(10, 0.1), num_features=4, num_gates=2)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(50 * torch.randn_like(p))
    for features in (torch.zeros(4), torch.ones(4)):
        assert teacher.loss(lprobs, target, teacher(features)) >= 0


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip_and_bad_epsilon(kind):
    structure = kind(C, 0.2)
    twin = build_structure(structure.config())
    assert twin.config() == structure.config()
    with pytest.raises(ValueError, match="epsilon"):
        kind(C, 1.0)


@pytest.mark.parametrize("form", ["gate", "attention"])
def test_teacher_starts_exactly_at_its_base_for_any_state(form):
    structure = SoftTargetStructure(C, 0.2)
    teacher = Teacher(structure, num_features=4, num_gates=3, form=form)
    base = structure.dense(structure.init_params())
    for _ in range(3):
        torch.testing.assert_close(structure.dense(teacher(torch.rand(4))), base)
    twin = Teacher.from_config(teacher.config())
    assert twin.form == form


def test_attention_weights_mix_the_loss_sets_convexly():
    teacher = Teacher(SmoothingStructure(C, 0.1), num_features=4, num_gates=3, form="attention").double()
    with torch.no_grad():
        teacher.delta["eps"].copy_(torch.tensor([[0.1], [0.2], [0.3]]))
    features = torch.rand(4, dtype=torch.float64)
    weights = teacher.gates(features)
    assert weights.sum().item() == pytest.approx(1.0)
    expected = (weights * (0.1 + torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))).sum()
    assert teacher(features)["eps"].item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="teacher form"):
        Teacher(SmoothingStructure(C), 4, form="mlp")


@pytest.mark.parametrize("kind", KINDS)
def test_a_fixed_scale_leaves_the_teacher_no_loss_scale(kind):
    """fixed_scale: no log_scale parameter, every column of W sums to 1, and the base is still exact."""
    structure = kind(C, 0.1, fixed_scale=True)
    params = structure.init_params(torch.float64)
    assert "log_scale" not in params
    logits = torch.randn(9, C, dtype=torch.float64)
    target = torch.randint(0, C, (9,))
    loss = dynamic_loss(F.log_softmax(logits, -1), target, structure, params, squash=False)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, label_smoothing=0.1), rtol=1e-12, atol=1e-12)
    generator = torch.Generator().manual_seed(3)
    moved = {k: v + torch.randn(v.shape, generator=generator, dtype=torch.float64) for k, v in params.items()}
    torch.testing.assert_close(structure.dense(moved).sum(0), torch.ones(C, dtype=torch.float64))
    rebuilt = build_structure(structure.config())
    assert rebuilt.fixed_scale and "log_scale" not in rebuilt.init_params()


@pytest.mark.parametrize("fixed_scale", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_mass_and_scale_report_the_loss_that_the_parameters_give(kind, fixed_scale):
    """The reported scale a is each column sum of W, and for label smoothing's family the reported eps is the
    one its diagonal a (1 - eps + eps / C) encodes; a raw mass outside [0, 1] reports as clamped."""
    structure = kind(C, 0.1, fixed_scale=fixed_scale)
    params = structure.init_params(torch.float64)
    generator = torch.Generator().manual_seed(5)
    moved = {k: v + 0.3 * torch.randn(v.shape, generator=generator, dtype=torch.float64) for k, v in params.items()}
    eps, scale = structure.mass_and_scale(moved)
    torch.testing.assert_close(scale.expand(C), structure.dense(moved).sum(0))
    if kind is SmoothingStructure:
        diagonal = structure.dense(moved).diagonal()
        torch.testing.assert_close(eps.expand(C), (1 - diagonal / scale) * C / (C - 1))
    moved["eps"] = torch.full_like(moved["eps"], 1.7)
    assert torch.equal(structure.mass_and_scale(moved)[0], torch.ones_like(moved["eps"]))
