"""The calibrated dev cross-entropy: blind to a global temperature, exact gradient through the fitted one."""
import math

import torch
import torch.nn.functional as F

from fairseq_l2t.dev_objectives import calibrated_cross_entropy


def informative_logits(seed: int = 0, n: int = 200, c: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n,), generator=generator)
    logits = 2 * torch.randn(n, c, generator=generator, dtype=torch.float64) + 3 * F.one_hot(target, c)
    return logits, target


def test_it_is_the_cross_entropy_at_the_best_temperature_whatever_the_logits_scale():
    logits, target = informative_logits()
    value = calibrated_cross_entropy(logits, target).mean()
    grid = min(F.cross_entropy(logits * beta, target).item() for beta in torch.linspace(0.01, 3, 3000).tolist())
    assert value.item() <= grid + 1e-12
    assert grid - value.item() < 1e-5
    assert value.item() < F.cross_entropy(logits, target).item()
    for factor in (0.1, 0.5, 4.0, 20.0):
        torch.testing.assert_close(calibrated_cross_entropy(factor * logits, target).mean(), value, rtol=1e-10,
                                   atol=0)


def test_its_gradient_matches_finite_differences_of_the_refitted_objective():
    logits, target = informative_logits(seed=1, n=40, c=5)
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(calibrated_cross_entropy(logits, target).sum(), logits)
    fd = torch.zeros_like(logits)
    eps = 1e-6
    with torch.no_grad():
        for index in range(logits.numel()):
            values = []
            for sign in (1, -1):
                shifted = logits.detach().clone().view(-1)
                shifted[index] += sign * eps
                values.append(calibrated_cross_entropy(shifted.view_as(logits), target).sum().item())
            fd.view(-1)[index] = (values[0] - values[1]) / (2 * eps)
    assert (grad - fd).norm() / fd.norm() < 1e-6
    # the fitted temperature matters: the gradient at beta = 1 is another one
    (plain,) = torch.autograd.grad(F.cross_entropy(logits, target, reduction="sum"), logits)
    assert (plain - fd).norm() / fd.norm() > 1e-2


def test_a_student_that_ranks_no_better_than_chance_scores_log_c():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(100, 4, generator=generator, dtype=torch.float64)
    target = logits.argmin(-1)  # anti-correlated: the best temperature is infinite, beta = 0
    assert abs(calibrated_cross_entropy(logits, target).mean().item() - math.log(4)) < 1e-9
