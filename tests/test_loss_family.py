import pytest
import torch
import torch.nn.functional as F

from fairseq_l2t.loss_family import dynamic_loss
from fairseq_l2t.loss_structures import DenseStructure, DiagLowRankStructure, build_structure

STRUCTURES = [DenseStructure(7), DiagLowRankStructure(7, rank=3)]


@pytest.mark.parametrize("structure", STRUCTURES, ids=["dense", "lowrank"])
def test_unsquashed_family_is_cross_entropy_at_init(structure):
    logits = torch.randn(11, 7, dtype=torch.float64)
    target = torch.randint(0, 7, (11,))
    params = structure.init_params(torch.float64)
    loss = dynamic_loss(F.log_softmax(logits, -1), target, structure, params, squash=False)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))


@pytest.mark.parametrize("structure", STRUCTURES, ids=["dense", "lowrank"])
def test_squashed_family_is_minus_sigmoid_of_log_p_y_at_init(structure):
    lprobs = F.log_softmax(torch.randn(5, 7, dtype=torch.float64), -1)
    target = torch.randint(0, 7, (5,))
    losses = dynamic_loss(lprobs, target, structure, structure.init_params(torch.float64), squash=True, reduction="none")
    torch.testing.assert_close(losses, -torch.sigmoid(lprobs.gather(1, target[:, None]).squeeze(1)))


def test_lowrank_and_dense_agree_on_the_same_matrix():
    lowrank = DiagLowRankStructure(9, rank=4)
    params = {k: torch.randn_like(v) for k, v in lowrank.init_params(torch.float64).items()}
    dense = DenseStructure(9)
    dense_params = {"W": lowrank.dense(params), "b": params["b"]}
    lprobs = F.log_softmax(torch.randn(13, 9, dtype=torch.float64), -1)
    target = torch.randint(0, 9, (13,))
    for squash in (False, True):
        a = dynamic_loss(lprobs, target, lowrank, params, squash, reduction="none")
        b = dynamic_loss(lprobs, target, dense, dense_params, squash, reduction="none")
        torch.testing.assert_close(a, b)
    # and the score is the explicit sum_i W[i, y] log p_i + b[y]
    W = dense_params["W"]
    explicit = torch.stack([(W[:, y] * lp).sum() + params["b"][y] for lp, y in zip(lprobs, target)])
    torch.testing.assert_close(lowrank.score(lprobs, target, params), explicit)


def test_ignore_index_and_reductions():
    structure = DenseStructure(5)
    params = {k: torch.randn_like(v) for k, v in structure.init_params(torch.float64).items()}
    lprobs = F.log_softmax(torch.randn(6, 5, dtype=torch.float64), -1)
    target = torch.tensor([0, 1, -100, 3, -100, 4])
    per = dynamic_loss(lprobs, target, structure, params, False, ignore_index=-100, reduction="none")
    assert per[2] == 0 and per[4] == 0
    keep = target.ne(-100)
    kept = dynamic_loss(lprobs[keep], target[keep], structure, params, False, reduction="none")
    torch.testing.assert_close(per[keep], kept)
    torch.testing.assert_close(dynamic_loss(lprobs, target, structure, params, False, -100, "sum"), kept.sum())
    torch.testing.assert_close(dynamic_loss(lprobs, target, structure, params, False, -100, "mean"), kept.mean())
    with pytest.raises(ValueError, match="reduction"):
        dynamic_loss(lprobs, target, structure, params, False, reduction="avg")


def test_lowrank_runs_on_a_32k_vocabulary_without_a_dense_matrix():
    structure = DiagLowRankStructure(32000, rank=8)
    params = structure.init_params()
    assert max(v.numel() for v in params.values()) == 32000 * 8
    logits = torch.randn(4, 32000, requires_grad=True)
    target = torch.randint(0, 32000, (4,))
    loss = dynamic_loss(F.log_softmax(logits, -1), target, structure, params, squash=False)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))
    loss.backward()
    assert logits.grad.shape == (4, 32000)


def test_structure_config_round_trip_and_errors():
    for structure in STRUCTURES:
        assert build_structure(structure.config()).config() == structure.config()
    with pytest.raises(ValueError, match="unknown loss structure"):
        build_structure({"kind": "sparse"})
    with pytest.raises(ValueError, match="rank"):
        DiagLowRankStructure(10, rank=0)


@pytest.mark.parametrize("structure", STRUCTURES, ids=["dense", "lowrank"])
def test_log_prob_floor_keeps_cross_entropy_at_init(structure):
    logits = torch.randn(9, 7, dtype=torch.float64) * 5
    target = torch.randint(0, 7, (9,))
    loss = dynamic_loss(F.log_softmax(logits, -1), target, structure, structure.init_params(torch.float64),
                        squash=False, log_prob_floor=-4.0)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))


def test_log_prob_floor_bounds_the_push_of_negative_weights():
    structure = DenseStructure(3)
    W = torch.eye(3, dtype=torch.float64)
    W[1, 0] = -0.5  # gold class 0: push log p_1 down
    params = {"W": W, "b": torch.zeros(3, dtype=torch.float64)}
    target = torch.tensor([0])

    def loss_at(gap, floor):
        logits = torch.tensor([[0.0, -gap, 0.0]], dtype=torch.float64, requires_grad=True)
        value = dynamic_loss(F.log_softmax(logits, -1), target, structure, params, False, log_prob_floor=floor)
        (grad,) = torch.autograd.grad(value, logits)
        return value.item(), grad[0, 1].item()

    unfloored = [loss_at(gap, None) for gap in (10.0, 100.0, 1000.0)]
    assert unfloored[2][0] < unfloored[1][0] - 40  # unbounded: keeps falling linearly
    assert all(abs(g) > 0.4 for _, g in unfloored)  # and the push on logit 1 never fades
    floored = [loss_at(gap, -5.0) for gap in (10.0, 100.0, 1000.0)]
    assert floored[2][0] == pytest.approx(floored[1][0], abs=1e-9)  # bounded
    assert abs(floored[2][1]) < 1e-9
