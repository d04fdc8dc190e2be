import math

import pytest
import torch

from fairseq_l2t.loss_structures import DenseStructure, DiagLowRankStructure
from fairseq_l2t.state_features import StudentState
from fairseq_l2t.teacher import Teacher


@pytest.mark.parametrize("structure", [DenseStructure(4), DiagLowRankStructure(4, 2)], ids=["dense", "lowrank"])
def test_first_teacher_output_is_the_base_loss_for_any_state(structure):
    teacher = Teacher(structure, num_features=4, num_gates=3)
    for _ in range(3):
        phi = teacher(torch.rand(4))
        torch.testing.assert_close(structure.dense(phi), torch.eye(4))
        torch.testing.assert_close(phi["b"], torch.zeros(4))


def test_teacher_output_moves_with_the_state_once_deltas_are_set():
    teacher = Teacher(DenseStructure(3), num_features=4)
    with torch.no_grad():
        teacher.delta["W"].normal_()
    a, b = teacher(torch.zeros(4))["W"], teacher(torch.ones(4))["W"]
    assert not torch.allclose(a, b)


def test_teacher_config_round_trip_and_shape_errors():
    teacher = Teacher(DiagLowRankStructure(6, 2), num_features=4, num_gates=2, squash=True,
                      feature_names=("a", "b", "c", "d"))
    twin = Teacher.from_config(teacher.config())
    twin.load_state_dict(teacher.state_dict())
    assert twin.config() == teacher.config()
    with pytest.raises(ValueError, match="expects 4 features"):
        teacher(torch.zeros(5))
    with pytest.raises(ValueError, match="num_gates"):
        Teacher(DenseStructure(3), 4, num_gates=0)


def test_state_features_are_normalised_and_tracked():
    state = StudentState(num_classes=4, total_steps=10, ema_decay=0.5, extras=("class_accuracy",))
    torch.testing.assert_close(state.features()[:4], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    lprobs = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]]))
    state.observe_batch(lprobs, torch.tensor([0, 1]))  # first right, second wrong
    ce = -(math.log(0.7) + math.log(0.1)) / 2
    f = state.features(torch.float64)
    assert f[0] == pytest.approx(0.1)
    assert f[1] == pytest.approx(ce / math.log(4))
    assert f[2] == pytest.approx(0.5)
    assert f[4:].tolist() == [1.0, 0.0, 0.0, 0.0]
    state.observe_batch(lprobs, torch.tensor([0, 2]))  # both right: EMA 0.5 * 0.5 + 0.5 * 1
    assert state.features(torch.float64)[2] == pytest.approx(0.75)
    state.observe_dev(0.8)
    assert state.features()[3] == pytest.approx(0.8)
    assert len(state.feature_names) == state.num_features == 8
    twin = state.copy()
    torch.testing.assert_close(twin.features(), state.features())
    with pytest.raises(ValueError, match="dev measure"):
        state.observe_dev(float("nan"))


def test_confusion_features_are_the_running_mean_probabilities_off_the_diagonal():
    state = StudentState(num_classes=3, total_steps=10, ema_decay=0.5, extras=("confusion", "class_accuracy"))
    assert state.feature_names[4:10] == ("confusion_0_1", "confusion_0_2", "confusion_1_0", "confusion_1_2",
                                         "confusion_2_0", "confusion_2_1")
    assert state.num_features == 4 + 6 + 3
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]], dtype=torch.float64)
    state.observe_batch(probs.log(), torch.tensor([0, 0, 1]))  # class 2 absent: its row stays unseen (zeros)
    f = state.features(torch.float64)
    torch.testing.assert_close(f[4:10], torch.tensor([0.25, 0.35, 0.1, 0.1, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(f[10:], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    state.observe_batch(torch.tensor([[0.2, 0.1, 0.7]], dtype=torch.float64).log(), torch.tensor([2]))
    torch.testing.assert_close(state.features(torch.float64)[8:10], torch.tensor([0.2, 0.1], dtype=torch.float64))
    state.observe_batch(torch.tensor([[0.9, 0.05, 0.05]], dtype=torch.float64).log(), torch.tensor([0]))
    torch.testing.assert_close(state.features(torch.float64)[4:6],  # EMA 0.5: (0.25 + 0.05) / 2, (0.35 + 0.05) / 2
                               torch.tensor([0.15, 0.2], dtype=torch.float64))
    twin = state.copy()
    torch.testing.assert_close(twin.features(), state.features())
    with pytest.raises(ValueError, match="extra state features"):
        StudentState(3, 10, extras=("confusion", "confusion"))
    with pytest.raises(ValueError, match="class counts"):
        state.observe_sums(torch.tensor([0.0, 1.0, 1.0]))


def test_state_ignores_padding_targets():
    state = StudentState(num_classes=3, total_steps=5, ignore_index=1)
    lprobs = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]))
    state.observe_batch(lprobs, torch.tensor([0, 1]))
    assert state.train_accuracy == 1.0
    assert state.train_loss == pytest.approx(-math.log(0.8))
