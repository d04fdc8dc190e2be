import pytest
import torch
from hypergrad_helpers import NUM_CLASSES, NUM_INPUTS, perturbed_teacher, relative_error, tiny_mlp
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from fairseq_l2t.dev_objectives import cross_entropy
from fairseq_l2t.online import lookahead_hypergradient
from fairseq_l2t.state_features import StudentState

# equality claims: the lookahead equals naive unrolling (float64)
pytestmark = pytest.mark.equality


def test_lookahead_from_a_live_student_matches_finite_differences_and_leaves_it_untouched():
    module = tiny_mlp()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2, momentum=0.9, weight_decay=0.01)
    x = torch.randn(40, NUM_INPUTS, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (40,))
    for i in range(3):  # a few real steps so that momentum buffers are not zero
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x[i * 8:(i + 1) * 8]), y[i * 8:(i + 1) * 8]).backward()
        optimizer.step()
    before = parameters_to_vector(module.parameters()).clone()
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in module.parameters()]
    teacher = perturbed_teacher()
    tracker = StudentState(NUM_CLASSES, total_steps=20)
    batches = [(x[8 * i:8 * i + 8], y[8 * i:8 * i + 8]) for i in range(3)]
    dev = [(x[24:], y[24:])]

    def run():
        return lookahead_hypergradient(module, optimizer, teacher, tracker, batches, dev, cross_entropy)

    result = run()
    analytic = torch.cat([g.reshape(-1) for g in result.teacher_grads])
    theta = parameters_to_vector(teacher.parameters()).detach().clone()
    eps, fd = 1e-6, torch.zeros_like(theta)
    for i in range(theta.numel()):
        values = []
        for sign in (1, -1):
            shifted = theta.clone()
            shifted[i] += sign * eps
            vector_to_parameters(shifted, teacher.parameters())
            values.append(run().dev_objective)
        fd[i] = (values[0] - values[1]) / (2 * eps)
    vector_to_parameters(theta, teacher.parameters())
    assert relative_error(analytic, fd) < 1e-4
    torch.testing.assert_close(parameters_to_vector(module.parameters()), before, rtol=0, atol=0)
    for p, m in zip(module.parameters(), momentum):
        torch.testing.assert_close(optimizer.state[p]["momentum_buffer"], m, rtol=0, atol=0)
    assert tracker.step == 0  # the live tracker is not advanced by the lookahead
    assert result.tracker.step == 3
