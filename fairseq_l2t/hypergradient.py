"""Hypergradients: d M(w_T) / d theta through T student SGD steps.

One stretch of student training under a teacher is an `Unroll`.  Four engines
compute the same exact gradient:

- "unrolled":     naive autograd through the whole trajectory (create_graph at
                  every step).  Memory grows with T and the graph; the reference.
- "stored":       reverse-mode differentiation (Maclaurin et al. 2015) with
                  every step's gradient graph kept from the forward pass: one
                  double backward (Hessian- and teacher-vector product) per
                  step, nothing recomputed.  Memory grows with T.
- "checkpointed": the same reverse pass with a fixed number of snapshots placed
                  by binomial checkpointing (Griewank's revolve): memory does not
                  grow with T, at the price of recomputing forward steps.
- "one_step":     T = 1 only, with no double backward: the step's teacher
                  term is one forward-mode product of the log-probabilities
                  along the dev gradient (see one_step_hypergradient), and the
                  step's gradient can be the real update's, reused.  On request
                  that product is a central difference of two plain forwards
                  (tangent="finite_difference"): not exact, but cheaper.

Reverse step t, with (dw, dv) the adjoints of (w_{t+1}, v_{t+1}):
    dv' = dv - lr * dw
    s   = <dv', g(w_t, phi_t(theta))>,  g = grad L_phi(w_t; B_t) + wd * w_t
    dtheta += ds/dtheta;  dw <- dw + ds/dw;  dv <- momentum * dv'

State features are data: the teacher's gradient comes only from M.

Data parallelism: with `Unroll.grad_sync` each process holds a shard of every
training batch and g = sync(grad of its shard's loss) + wd * w.  sync is
linear and every rank holds the same w, v and adjoints, so the reverse step
syncs its pulled terms the same way and adds the weight-decay term once,
locally.  With `dev_sync` (a sum over ranks) each rank may hold a different
share of the dev set.  Every rank then computes the same hypergradient.
BatchNorm running statistics are constants in the derivative (as in PyTorch,
where their update is not differentiable); the dev objective uses eval mode.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Container, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad
from torch.nn.attention import SDPBackend, sdpa_kernel

from .dev_objectives import DevObjective
from .functional_student import FunctionalStudent, SGDConfig, StudentSnapshot
from .loss_structures import BILINEAR_KINDS, LINEAR_KINDS, LossParams
from .non_finite import all_finite
from .state_features import StudentState
from .teacher import Teacher

ENGINES = ("unrolled", "stored", "checkpointed", "one_step")
TANGENTS = ("forward_mode", "finite_difference")  # how one_step takes the log-probabilities' derivative
# central-difference step, relative to |w_0|, times cbrt(the dtype's machine epsilon): the error's two parts
# (truncation, h^2; rounding, eps / h) balance near cbrt(eps).  On the NMT demo's model (|w_0| = 88) steps of
# norm 1e-4, 1e-3 and 1e-2 left teacher-gradient errors of about 1e-4, 6e-5 and 3e-4; this gives 8.6e-4
FD_STEP = 2e-3
RngState = tuple[Tensor, Tensor | None]  # (CPU generator state, CUDA generator state or None)
Batch = tuple[Tensor | dict, Tensor]  # (inputs or fairseq net_input, target)


@dataclass
class Unroll:
    """T steps of student training under the teacher, then the dev objective.

    batch_at(t) must return the same batch every time it is asked for step t;
    rng_seed, when set, reseeds the RNG before every step so that dropout masks
    are replayed exactly during the reverse pass.  `features`, when given,
    replays recorded state features instead of reading the tracker: the
    hypergradient is by definition taken with the features held at their
    values, and this is how finite differences check it.

    grad_sync turns this rank's gradient of its training loss into the
    global gradient; it must be linear (e.g. a mean over ranks of equal
    shards' mean losses, or a sum when the per-rank losses sum to the global
    loss).  dev_sync sums a list of tensors over ranks, so that ranks may
    hold different dev shards.  The "unrolled" engine supports neither.
    """

    student: FunctionalStudent
    teacher: Teacher
    sgd: SGDConfig
    steps: int
    batch_at: Callable[[int], Batch]
    dev_batches: Sequence[Batch]
    dev_objective: DevObjective
    tracker: StudentState
    ignore_index: int | None = None
    rng_seed: int | None = None
    features: Sequence[Tensor] | None = None
    grad_sync: Callable[[list[Tensor]], list[Tensor]] | None = None
    dev_sync: Callable[[list[Tensor]], list[Tensor]] | None = None

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"an unroll needs at least 1 step, got {self.steps}")
        if self.features is not None and len(self.features) != self.steps:
            raise ValueError(f"{len(self.features)} replayed feature vectors for {self.steps} steps")
        if len(self.dev_batches) == 0 or any(int(y.numel()) == 0 for _, y in self.dev_batches):
            raise ValueError("the dev set for the teacher's objective has no examples")


@dataclass
class HypergradResult:
    dev_objective: float
    teacher_grads: tuple[Tensor, ...]
    final: StudentSnapshot
    tracker: StudentState
    features: list[Tensor] = field(repr=False)

    def is_finite(self) -> bool:
        return math.isfinite(self.dev_objective) and all_finite(self.teacher_grads)


def hypergradient(unroll: Unroll, start: StudentSnapshot, engine: str = "stored", snapshots: int = 8) -> HypergradResult:
    """Run the unroll from `start` and return M(w_T) and dM/dtheta."""
    if engine not in ENGINES:
        raise ValueError(f"unknown hypergradient engine {engine!r}; choose from {ENGINES}")
    if engine == "unrolled":
        if unroll.grad_sync is not None or unroll.dev_sync is not None:
            raise ValueError("the unrolled engine is single-process; use stored or checkpointed with grad_sync")
        return _unrolled(unroll, start)
    if engine == "one_step":
        return one_step_hypergradient(unroll, start)
    if snapshots < 1:
        raise ValueError(f"checkpointed engine needs at least 1 snapshot, got {snapshots}")
    return _reverse_mode(unroll, start, keep_graphs=engine == "stored", snapshots=snapshots)


def run_unroll(unroll: Unroll, start: StudentSnapshot) -> tuple[float, StudentSnapshot, StudentState]:
    """Forward only: M(w_T), the final student and its tracker (no hypergradient)."""
    trajectory = _forward(unroll, start)
    with torch.no_grad():
        value, _ = _dev_objective(unroll, trajectory.final.params, dict(trajectory.final.buffers), with_gradient=False)
    return value, trajectory.final, trajectory.tracker


def rng_state(device: torch.device) -> RngState:
    """The generator state that the next forward on `device` draws its dropout masks from."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def _step_context(rng_seed: int | None, step: int, device: torch.device,
                  replay: RngState | None = None) -> Iterator[None]:
    """Replayable randomness (dropout) and attention kernels that support double backward.

    The fused CPU/GPU attention kernels have no second derivative (nor a
    forward-mode one), so every student forward inside an unroll uses the math
    kernel, in the forward and the reverse pass alike (the same numbers both
    times).  Dropout draws from rng_seed + step, or from a recorded generator
    state (`replay`, which wins).
    """
    with sdpa_kernel(SDPBackend.MATH):
        if rng_seed is None and replay is None:
            yield
            return
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if replay is None:
                torch.manual_seed(rng_seed + step)
            else:
                torch.set_rng_state(replay[0])
                if replay[1] is not None:
                    torch.cuda.set_rng_state(replay[1], device)
            yield


def _training_gradients(unroll: Unroll, params: tuple[Tensor, ...], buffers: dict[str, Tensor], step: int,
                        phi: LossParams, create_graph: bool) -> tuple[list[Tensor], Tensor, Tensor]:
    """g(w_t) = grad L_phi(w_t; B_t) + wd * w_t, and the batch's log-probabilities.

    With grad_sync, only this rank's grad L_phi (no weight decay, not synced),
    which the forward step passes to _synced_step_direction.
    """
    inputs, target = unroll.batch_at(step)
    with _step_context(unroll.rng_seed, step, target.device):
        logits = unroll.student.logits(params, buffers, inputs, train=True)
    lprobs = F.log_softmax(logits, dim=-1)
    loss = unroll.teacher.loss(lprobs, target, phi, unroll.ignore_index)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    if unroll.grad_sync is None:
        grads = unroll.sgd.with_weight_decay(grads, params)
    return grads, lprobs, target


def _synced_step_direction(unroll: Unroll, local_grads: list[Tensor], params: tuple[Tensor, ...]) -> list[Tensor]:
    """The global g(w_t): synced training-loss gradient, then weight decay once (constants: no graph)."""
    return unroll.sgd.with_weight_decay(unroll.grad_sync([g.detach() for g in local_grads]),
                                        [p.detach() for p in params])


@dataclass
class _KeptGraph:
    params: tuple[Tensor, ...]
    grads: list[Tensor]


def _advance(unroll: Unroll, state: StudentSnapshot, step: int, phi: LossParams, differentiable: bool = False,
             keep_graph: bool = False) -> tuple[StudentSnapshot, Tensor, Tensor, _KeptGraph | None]:
    """One SGD step of the student.

    differentiable=True keeps the graph through the new state (naive unrolling);
    keep_graph=True returns (w_t, g(w_t)) with g's graph (with grad_sync: this
    rank's unsynced loss gradient), so that the reverse pass can reuse it
    instead of recomputing the step.
    """
    params = state.params if differentiable else tuple(p.detach().requires_grad_() for p in state.params)
    buffers = {k: b.clone() for k, b in state.buffers.items()}
    grads, lprobs, target = _training_gradients(unroll, params, buffers, step, phi,
                                                create_graph=differentiable or keep_graph)
    kept = _KeptGraph(params, grads) if keep_graph else None
    if unroll.grad_sync is not None:
        grads = _synced_step_direction(unroll, grads, params)
    new_params, velocity = unroll.sgd.step(params, state.velocity, grads)
    if not differentiable:
        new_params = tuple(p.detach() for p in new_params)
        velocity = tuple(v.detach() for v in velocity)
    return StudentSnapshot(new_params, velocity, buffers), lprobs.detach(), target, kept


def _dev_value(unroll: Unroll, params: tuple[Tensor, ...], buffers: dict[str, Tensor]) -> tuple[Tensor, int]:
    """Sum of the dev objective's values over all dev batches (eval mode), and how many values.

    A dev objective returns one value per example (classification) or one per
    batch (corpus-level rewards such as expected BLEU); M is their mean.
    """
    total, count = None, 0
    for inputs, target in unroll.dev_batches:
        with sdpa_kernel(SDPBackend.MATH):
            logits = unroll.student.logits(params, buffers, inputs, train=False)
        values = unroll.dev_objective(logits, target)
        total = values.sum() if total is None else total + values.sum()
        count += values.numel()
    return total, count


def _dev_objective(unroll: Unroll, params: tuple[Tensor, ...], buffers: dict[str, Tensor],
                   with_gradient: bool = True) -> tuple[float, list[Tensor]]:
    """M and, if with_gradient, dM/dw (where the reverse pass starts); over all ranks' dev shards with dev_sync."""
    total, count = _dev_value(unroll, params, buffers)
    if unroll.dev_sync is None:
        mean = total / count
        return mean.item(), _grad_or_zeros(mean, params) if with_gradient else []
    local_dm_dw = _grad_or_zeros(total, params) if with_gradient else []
    local_count = torch.tensor(float(count), dtype=total.dtype, device=total.device)
    *dm_dw, total, count = unroll.dev_sync([*local_dm_dw, total.detach(), local_count])
    return (total / count).item(), [g / count for g in dm_dw]


def _features_at(unroll: Unroll, tracker: StudentState, step: int) -> Tensor:
    """s_t: replayed if the unroll carries recorded features, else read from the tracker."""
    if unroll.features is not None:
        return unroll.features[step]
    p = next(unroll.teacher.parameters())
    return tracker.features(p.dtype, p.device)


def _unrolled(unroll: Unroll, start: StudentSnapshot) -> HypergradResult:
    tracker = unroll.tracker.copy()
    state = start.detached()
    state = StudentSnapshot(tuple(p.requires_grad_() for p in state.params), state.velocity, state.buffers)
    features = []
    for step in range(unroll.steps):
        features.append(_features_at(unroll, tracker, step))
        state, lprobs, target, _ = _advance(unroll, state, step, unroll.teacher(features[-1]), differentiable=True)
        tracker.observe_batch(lprobs, target)
    total, count = _dev_value(unroll, state.params, state.buffers)
    grads = tuple(_grad_or_zeros(total / count, tuple(unroll.teacher.parameters())))
    return HypergradResult((total / count).item(), grads, state.detached(), tracker, features)


class _Adjoint:
    """Adjoints (dw, dv) of the current student state and the accumulated dtheta."""

    def __init__(self, dw: list[Tensor], velocity_like: tuple[Tensor, ...], theta: tuple[Tensor, ...]):
        self.dw = dw
        self.dv = [torch.zeros_like(v) for v in velocity_like]
        self.dtheta = [torch.zeros_like(t) for t in theta]


def _reverse_step(unroll: Unroll, state: StudentSnapshot | None, step: int, features: Tensor, adjoint: _Adjoint,
                  theta: tuple[Tensor, ...], kept: _KeptGraph | None = None) -> None:
    """Pull (dw, dv) from step+1 back to step and add this step's share of dtheta.

    The step's gradient graph is `kept` from the forward pass, or recomputed from `state`.

    With grad_sync the kept/recomputed gradients are this rank's training-loss
    gradients: their pulled terms are synced like the forward gradients and
    the weight-decay term wd * dv' is added once, locally.
    """
    sgd = unroll.sgd
    if kept is None:
        params = tuple(p.detach().requires_grad_() for p in state.params)
        buffers = {k: b.clone() for k, b in state.buffers.items()}
        grads, _, _ = _training_gradients(unroll, params, buffers, step, unroll.teacher(features), create_graph=True)
    else:
        params, grads = kept.params, kept.grads
    # the adjoint of the step direction g is the adjoint of v'; ds/dw and ds/dtheta of s = <that, g>
    dv_total = sgd.adjoint_of_direction(adjoint.dw, adjoint.dv)
    inner = sum((g * d).sum() for g, d in zip(grads, dv_total))
    pulled = torch.autograd.grad(inner, params + theta, allow_unused=True)
    if unroll.grad_sync is not None:
        pulled = unroll.grad_sync([torch.zeros_like(x) if g is None else g for x, g in zip(params + theta, pulled)])
        pulled[: len(params)] = sgd.with_weight_decay(pulled[: len(params)], dv_total)
    for i, g in enumerate(pulled[: len(params)]):
        if g is not None:
            adjoint.dw[i] = adjoint.dw[i] + g
    for i, g in enumerate(pulled[len(params):]):
        if g is not None:
            adjoint.dtheta[i] = adjoint.dtheta[i] + g
    adjoint.dv = sgd.adjoint_of_velocity(dv_total)


def _binomial_split(length: int, snapshots: int) -> int:
    """Where revolve puts the next snapshot in a segment of `length` steps.

    With s snapshots and r recomputations per step one can reverse
    beta(s, r) = C(s + r, s) steps; the first snapshot goes beta(s, r - 1)
    steps in, for the least r with beta(s, r) >= length.
    """
    repeats = 1
    while math.comb(snapshots + repeats, snapshots) < length:
        repeats += 1
    return min(max(math.comb(snapshots + repeats - 1, snapshots), 1), length - 1)


@dataclass
class _Trajectory:
    final: StudentSnapshot
    tracker: StudentState
    features: list[Tensor]  # s_t; phi_t is recomputed from them (a teacher forward), not stored: O(C r) per step
    graphs: dict[int, _KeptGraph]  # step -> (w_t, g(w_t)) with its graph through phi to theta
    states: dict[int, StudentSnapshot]  # step -> (w_t, v_t)


def _forward(unroll: Unroll, start: StudentSnapshot, keep_graph_at: Container[int] = (),
             keep_state_at: Container[int] = ()) -> _Trajectory:
    """Run the T steps, keeping the gradient graphs and the states of the steps that the reverse pass asks for."""
    tracker = unroll.tracker.copy()
    features: list[Tensor] = []
    graphs: dict[int, _KeptGraph] = {}
    states: dict[int, StudentSnapshot] = {}
    state = start.detached()
    for step in range(unroll.steps):
        if step in keep_state_at:
            states[step] = state
        features.append(_features_at(unroll, tracker, step))
        keep = step in keep_graph_at
        with torch.set_grad_enabled(keep):
            phi = unroll.teacher(features[-1])
        state, lprobs, target, kept = _advance(unroll, state, step, phi, keep_graph=keep)
        tracker.observe_batch(lprobs, target)
        if keep:
            graphs[step] = kept
    return _Trajectory(state, tracker, features, graphs, states)


def _grad_or_zeros(output: Tensor, inputs: tuple[Tensor, ...]) -> list[Tensor]:
    """d output / d inputs, with zeros where output does not depend on an input."""
    if not output.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(output, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


def _rightmost_snapshots(steps: int, snapshots: int) -> list[int]:
    """The snapshot positions revolve reaches first, each from the one before: the forward pass can keep them."""
    positions, begin = [], 0
    while steps - begin > 1 and snapshots > 0:
        begin += _binomial_split(steps - begin, snapshots)
        positions.append(begin)
        snapshots -= 1
    return positions


def _reverse_mode(unroll: Unroll, start: StudentSnapshot, keep_graphs: bool, snapshots: int) -> HypergradResult:
    """The stored engine (keep_graphs: every step's graph from the forward pass) or the checkpointed one.

    Checkpointed: binomial snapshots, of which the forward pass already keeps
    the first chain (and the last step's graph), so revolve does not redo that
    sweep; each advance keeps the graph of its first step, which the leaf that
    reverses that step then uses instead of recomputing it (one graph per
    recursion level, so memory stays flat in T).
    """
    theta = tuple(unroll.teacher.parameters())
    last = unroll.steps - 1
    trajectory = (_forward(unroll, start, keep_graph_at=range(unroll.steps)) if keep_graphs else
                  _forward(unroll, start, keep_graph_at={last},
                           keep_state_at=set(_rightmost_snapshots(unroll.steps, snapshots))))
    features, graphs, final = trajectory.features, trajectory.graphs, trajectory.final
    params = tuple(p.detach().requires_grad_() for p in final.params)
    value, dm_dw = _dev_objective(unroll, params, {k: b.clone() for k, b in final.buffers.items()})
    adjoint = _Adjoint(dm_dw, final.velocity, theta)

    if keep_graphs:
        for step in reversed(range(unroll.steps)):
            _reverse_step(unroll, None, step, features[step], adjoint, theta, graphs.pop(step))  # frees it
    else:
        known = trajectory.states

        def advance_to(state: StudentSnapshot, begin: int, end: int) -> StudentSnapshot:
            if end in known:
                return known.pop(end)
            for step in range(begin, end):
                keep = step == begin and step not in graphs
                with torch.set_grad_enabled(keep):
                    phi = unroll.teacher(features[step])
                state, _, _, kept = _advance(unroll, state, step, phi, keep_graph=keep)
                if keep:
                    graphs[step] = kept
            return state

        def reverse_segment(begin: int, end: int, state: StudentSnapshot, free: int) -> None:
            if end - begin == 1:
                _reverse_step(unroll, state, begin, features[begin], adjoint, theta, graphs.pop(begin, None))
                return
            if free == 0:
                for step in reversed(range(begin, end)):
                    _reverse_step(unroll, advance_to(state, begin, step), step, features[step], adjoint, theta,
                                  graphs.pop(step, None))
                return
            middle = begin + _binomial_split(end - begin, free)
            reverse_segment(middle, end, advance_to(state, begin, middle), free - 1)
            reverse_segment(begin, middle, state, free)

        reverse_segment(0, unroll.steps, start.detached(), snapshots)

    return HypergradResult(value, tuple(adjoint.dtheta), final, trajectory.tracker, features)


def one_step_hypergradient(unroll: Unroll, start: StudentSnapshot, direction: Sequence[Tensor] | None = None,
                           replay: RngState | None = None, tangent: str = "forward_mode") -> HypergradResult:
    """The T = 1 hypergradient with no double backward.

    w_1 = w_0 - lr * (momentum * v_0 + g(w_0, phi)) and only g depends on theta, so
        dM/dtheta = d/dtheta <dv', g(w_0, phi(theta))>,   dv' = -lr * dM/dw_1,
    and <dv', grad_w L_phi> sums, over the batch, dL/dlprobs (which depends on phi)
    times J_w lprobs dv' (which does not): the log-probabilities' derivative along
    dv', one forward-mode pass, dotted with the loss's gradient in lprobs (no network).

    `direction`, when the caller has it, is the step's training-loss gradient
    (global over the ranks, without weight decay): the real update's, reused
    instead of a forward and backward here; `replay` then replays the dropout
    masks it was computed with.  The teacher term is taken on batch 0 of the
    unroll: the direction's own batch gives the exact hypergradient, a random
    part of it an estimate (fairseq's --lookahead-tokens).

    tangent="finite_difference" takes J_w lprobs dv' as a central difference
    of two plain forwards (same masks) instead of one forward-mode pass, which
    costs about 4 plain forwards on CPU (PyTorch's forward-mode linear on a
    batch of sequences runs as a batched matmul): relative error about 1e-4
    in float32 on the NMT model, O(h^2) (below 1e-6) in float64.
    """
    if tangent not in TANGENTS:
        raise ValueError(f"unknown tangent {tangent!r}; choose from {TANGENTS}")
    if unroll.steps != 1:
        raise ValueError(f"the one_step engine differentiates one student step; this unroll has {unroll.steps}")
    theta = tuple(unroll.teacher.parameters())
    tracker = unroll.tracker.copy()
    features = _features_at(unroll, tracker, 0)
    state = start.detached()
    buffers = {k: b.clone() for k, b in state.buffers.items()}  # with `direction`, the real forward moved them
    if direction is None:
        params = tuple(p.detach().requires_grad_() for p in state.params)
        with torch.no_grad():
            phi = unroll.teacher(features)
        grads, _, _ = _training_gradients(unroll, params, buffers, 0, phi, create_graph=False)
        if unroll.grad_sync is not None:
            grads = _synced_step_direction(unroll, grads, params)
    else:
        grads = unroll.sgd.with_weight_decay([d.detach() for d in direction], state.params)
    new_params, velocity = unroll.sgd.step(state.params, state.velocity, [g.detach() for g in grads])
    final = StudentSnapshot(new_params, velocity, buffers)
    value, dm_dw = _dev_objective(unroll, tuple(p.detach().requires_grad_() for p in new_params),
                                  {k: b.clone() for k, b in buffers.items()})
    along = unroll.sgd.adjoint_of_direction(dm_dw, [torch.zeros_like(v) for v in velocity])
    along_of = _log_probs_along if tangent == "forward_mode" else _log_probs_by_differences
    lprobs, lprobs_along, target = along_of(unroll, state, along, replay)
    dtheta = _grad_or_zeros(_loss_derivative_along(unroll, features, lprobs, lprobs_along, target), theta)
    if unroll.grad_sync is not None:
        dtheta = unroll.grad_sync(dtheta)
    tracker.observe_batch(lprobs.detach(), target)
    return HypergradResult(value, tuple(dtheta), final.detached(), tracker, [features])


def _loss_derivative_along(unroll: Unroll, features: Tensor, lprobs: Tensor, along: Tensor, target: Tensor) -> Tensor:
    """sum over the batch of dL_phi/dlprobs . along, with its graph to theta.

    The soft-target structures are linear in the log-probabilities, so that sum
    is L(along); the unsquashed, unfloored bilinear family is affine
    (L = -(sum_i W[i, y] log p_i + b[y])), so it is L(along) - L(0): no second
    derivative either way.  Otherwise (the corrected family, the squash, a
    floor) dL/dlprobs is taken with its graph and dotted with `along`.
    """
    teacher, ignore = unroll.teacher, unroll.ignore_index
    phi = teacher(features)
    kind = teacher.structure.kind
    if kind in LINEAR_KINDS:
        return teacher.loss(along, target, phi, ignore)
    if kind in BILINEAR_KINDS and not teacher.squash and teacher.log_prob_floor is None:
        return teacher.loss(along, target, phi, ignore) - teacher.loss(torch.zeros_like(along), target, phi, ignore)
    z = lprobs.requires_grad_()
    (dloss_dz,) = torch.autograd.grad(teacher.loss(z, target, phi, ignore), z, create_graph=True)
    return (dloss_dz * along).sum()


def _log_probs_along(unroll: Unroll, state: StudentSnapshot, tangent: Sequence[Tensor],
                     replay: RngState | None) -> tuple[Tensor, Tensor, Tensor]:
    """Batch 0's log-probabilities at w_0 and their derivative along `tangent`, and its target.

    Forward mode; for a student with an op that has no forward-mode derivative
    (an LSTM's packed sequences), the double-backward product instead:
    J t = d/dr <J^T r, t>, the same numbers at about the stored engine's cost.
    """
    inputs, target = unroll.batch_at(0)
    try:
        with forward_ad.dual_level():
            duals = [forward_ad.make_dual(p, t.detach()) for p, t in zip(state.params, tangent)]
            primal, along = forward_ad.unpack_dual(_log_probs(unroll, state, duals, inputs, replay))
            return primal.clone(), along.clone(), target
    except NotImplementedError as err:
        if "forward AD" not in str(err):
            raise
    params = tuple(p.detach().requires_grad_() for p in state.params)
    with _step_context(unroll.rng_seed, 0, target.device, replay):
        lprobs = F.log_softmax(unroll.student.logits(params, {k: b.clone() for k, b in state.buffers.items()}, inputs,
                                                     train=True), dim=-1)
    probe = torch.zeros_like(lprobs, requires_grad=True)
    pulled = torch.autograd.grad(lprobs, params, grad_outputs=probe, create_graph=True, allow_unused=True)
    dot = sum((g * t).sum() for g, t in zip(pulled, tangent) if g is not None)
    (along,) = torch.autograd.grad(dot, probe)
    return lprobs.detach(), along, target


def _log_probs_by_differences(unroll: Unroll, state: StudentSnapshot, tangent: Sequence[Tensor],
                              replay: RngState | None) -> tuple[Tensor, Tensor, Tensor]:
    """_log_probs_along's numbers from two plain forwards at w_0 +- h t (the same dropout masks):
    J t = (lprobs(w_0 + h t) - lprobs(w_0 - h t)) / 2h, and lprobs(w_0) as their mean, both to O(h^2)."""
    inputs, target = unroll.batch_at(0)
    tangent_norm = math.sqrt(sum(float(t.double().square().sum()) for t in tangent))
    if tangent_norm == 0.0:
        lprobs = _log_probs(unroll, state, state.params, inputs, replay)
        return lprobs, torch.zeros_like(lprobs), target
    weight_norm = math.sqrt(sum(float(p.double().square().sum()) for p in state.params))
    h = FD_STEP * torch.finfo(state.params[0].dtype).eps ** (1 / 3) * max(weight_norm, 1.0) / tangent_norm
    plus = _log_probs(unroll, state, [p + h * t for p, t in zip(state.params, tangent)], inputs, replay)
    minus = _log_probs(unroll, state, [p - h * t for p, t in zip(state.params, tangent)], inputs, replay)
    lprobs = (plus + minus) / 2
    return lprobs, plus.sub_(minus).div_(2 * h), target


def _log_probs(unroll: Unroll, state: StudentSnapshot, params: Sequence[Tensor], inputs: Tensor | dict,
               replay: RngState | None) -> Tensor:
    """Step 0's training-mode log-probabilities at `params` (plain or forward-mode duals), no graph."""
    with torch.no_grad(), _step_context(unroll.rng_seed, 0, state.params[0].device, replay):
        return F.log_softmax(unroll.student.logits(tuple(params), {k: b.clone() for k, b in state.buffers.items()},
                                                   inputs, train=True), dim=-1)
