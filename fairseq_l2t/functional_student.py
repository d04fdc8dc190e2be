"""A student called functionally: parameters, momentum and buffers are explicit
tensors, so a stretch of its training can be replayed and differentiated.

The update is exactly torch.optim.SGD's (dampening 0, no Nesterov):
    g = grad L(w) + weight_decay * w;   v <- momentum * v + g;   w <- w - lr * v
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call


@dataclass(frozen=True)
class SGDConfig:
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self):
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"student learning rate must be a positive number, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay}")

    def with_weight_decay(self, grads: Sequence[Tensor], params: Sequence[Tensor]) -> list[Tensor]:
        """g = grad L(w) + weight_decay * w (the same term pulls the adjoint back in the reverse pass)."""
        if not self.weight_decay:
            return list(grads)
        return [g + self.weight_decay * p for g, p in zip(grads, params)]

    def step(self, params: Sequence[Tensor], velocity: Sequence[Tensor],
             grads: Sequence[Tensor]) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """The forward rule: v' = momentum * v + g, w' = w - lr * v'."""
        new_velocity = tuple(self.momentum * v + g for v, g in zip(velocity, grads))
        return tuple(p - self.lr * v for p, v in zip(params, new_velocity)), new_velocity

    def adjoint_of_direction(self, dw: Sequence[Tensor], dv: Sequence[Tensor]) -> list[Tensor]:
        """Its transpose, part 1: the adjoint of v' (and so of g), given the adjoints (dw, dv) of (w', v')."""
        return [v - self.lr * w for v, w in zip(dv, dw)]

    def adjoint_of_velocity(self, dv_new: Sequence[Tensor]) -> list[Tensor]:
        """Its transpose, part 2: the adjoint of v from that of v'."""
        return [self.momentum * d for d in dv_new]

    @classmethod
    def from_optimizer(cls, optimizer: torch.optim.Optimizer) -> "SGDConfig":
        """Read lr, momentum and weight decay from a live torch.optim.SGD."""
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            raise ValueError("hypergradients need a torch.optim.SGD student optimizer with one parameter group")
        group = optimizer.param_groups[0]
        if group.get("nesterov") or group.get("dampening", 0) != 0:
            raise ValueError("hypergradients support SGD without Nesterov and with dampening 0")
        return cls(float(group["lr"]), float(group["momentum"]), float(group["weight_decay"]))


@dataclass
class StudentSnapshot:
    """w_t, v_t and the module's buffers (BatchNorm statistics, frozen weights)."""

    params: tuple[Tensor, ...]
    velocity: tuple[Tensor, ...]
    buffers: dict[str, Tensor]

    def detached(self) -> "StudentSnapshot":
        return StudentSnapshot(
            tuple(p.detach().clone() for p in self.params),
            tuple(v.detach().clone() for v in self.velocity),
            {k: b.detach().clone() for k, b in self.buffers.items()},
        )


class FunctionalStudent:
    """Wraps any nn.Module; its trainable parameters become explicit arguments."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.param_names = tuple(n for n, p in module.named_parameters() if p.requires_grad)
        self._frozen_names = tuple(n for n, p in module.named_parameters() if not p.requires_grad)
        self._original_parameters = tuple(module.named_parameters(remove_duplicate=False))

    def snapshot(self, optimizer: torch.optim.Optimizer | None = None) -> StudentSnapshot:
        """Current weights, SGD momentum buffers (zeros before the first step) and buffers."""
        named = dict(self.module.named_parameters())
        params = tuple(named[n].detach().clone() for n in self.param_names)
        velocity = []
        for name, p in zip(self.param_names, params):
            buf = optimizer.state.get(named[name], {}).get("momentum_buffer") if optimizer is not None else None
            velocity.append(torch.zeros_like(p) if buf is None else buf.detach().clone())
        buffers = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        buffers.update({n: named[n].detach().clone() for n in self._frozen_names})
        return StudentSnapshot(params, tuple(velocity), buffers)

    @torch.no_grad()
    def load(self, snapshot: StudentSnapshot, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Write a snapshot back into the module (and the optimizer's momentum buffers)."""
        named = dict(self.module.named_parameters())
        for name, value, velocity in zip(self.param_names, snapshot.params, snapshot.velocity):
            named[name].copy_(value)
            if optimizer is not None:
                optimizer.state[named[name]]["momentum_buffer"] = velocity.detach().clone()
        module_buffers = dict(self.module.named_buffers())
        for name, value in snapshot.buffers.items():
            (module_buffers[name] if name in module_buffers else named[name]).copy_(value)

    def logits(self, params: tuple[Tensor, ...], buffers: dict[str, Tensor], inputs: Tensor | dict,
               train: bool) -> Tensor:
        """Forward pass with explicit tensors; BatchNorm updates `buffers` in place when train=True.

        `inputs` is a tensor, or a dict of keyword arguments (a fairseq
        sample's net_input); a tuple output (fairseq's (logits, extra)) gives
        its first element.
        """
        was_training = self.module.training
        self.module.train(train)
        tensors = {**buffers, **dict(zip(self.param_names, params))}
        try:
            if isinstance(inputs, dict):
                output = functional_call(self.module, tensors, (), inputs)
            else:
                output = functional_call(self.module, tensors, (inputs,))
        finally:
            self.module.train(was_training)
            self._retie()
        return output[0] if isinstance(output, tuple) else output

    def _retie(self) -> None:
        """Put back parameters that functional_call failed to restore.

        torch.func.functional_call unties a parameter shared by a module that
        is itself shared (fairseq's --share-all-embeddings: one embedding in
        encoder and decoder, tied to the output projection); the live model
        would silently train two copies afterwards.
        """
        for name, parameter in self._original_parameters:
            owner_name, _, attribute = name.rpartition(".")
            owner = self.module.get_submodule(owner_name)
            if owner._parameters.get(attribute) is not parameter:
                owner._parameters[attribute] = parameter
