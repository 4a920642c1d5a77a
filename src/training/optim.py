"""SGD with the paper's schedule: linear warm-up, then x0.1 steps at fixed fractions of training."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Every normalization layer torchvision and torch use; their affine parameters get no weight decay.
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def scaled_lr(base_lr: float, base_batch_size: int, batch_size: int) -> float:
    """Linear scaling rule (Goyal et al.): the paper's lr 0.02 at 16 images per batch."""
    if base_batch_size <= 0 or batch_size <= 0:
        raise ValueError(
            f"batch sizes must be positive, got base_batch_size={base_batch_size}, "
            f"batch_size={batch_size}"
        )
    return base_lr * batch_size / base_batch_size


def param_groups(
    model: nn.Module, weight_decay: float, norm_weight_decay: float, bias_weight_decay: float
) -> list[dict]:
    """Split trainable parameters into groups by decay: plain weights, norm affines, biases.

    Returns:
        Up to three dicts ``{"params": [...], "weight_decay": float, "name": str}``; empty
        groups are left out. Frozen parameters (``requires_grad=False``) are in none.
    """
    groups: dict[str, list[nn.Parameter]] = {"weights": [], "norms": [], "biases": []}
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORM_TYPES):
                groups["norms"].append(p)
            elif name == "bias":
                groups["biases"].append(p)
            else:
                groups["weights"].append(p)
    decay = {"weights": weight_decay, "norms": norm_weight_decay, "biases": bias_weight_decay}
    return [
        {"params": ps, "weight_decay": decay[name], "name": name}
        for name, ps in groups.items()
        if ps
    ]


def warmup_multistep(
    total_steps: int,
    warmup_steps: int,
    warmup_factor: float = 0.001,
    milestones: Sequence[float] = (2 / 3, 8 / 9),
    gamma: float = 0.1,
):
    """Learning-rate multiplier per optimizer step, for ``torch.optim.lr_scheduler.LambdaLR``.

    Args:
        total_steps: optimizer steps in the whole run.
        warmup_steps: steps of linear ramp from ``warmup_factor`` to 1.
        milestones: fractions of ``total_steps`` where the rate is multiplied by ``gamma``
            (the paper trains 60k + 20k iterations of a 90k schedule: 2/3 and 8/9).
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if any(not 0.0 < m <= 1.0 for m in milestones):
        raise ValueError(f"milestones are fractions of training in (0, 1], got {list(milestones)}")
    steps = sorted(round(m * total_steps) for m in milestones)

    def factor(step: int) -> float:
        decay = gamma ** sum(step >= s for s in steps)
        if step < warmup_steps:
            alpha = step / warmup_steps
            return decay * (warmup_factor * (1 - alpha) + alpha)
        return decay

    return factor


def build_sgd(
    model: nn.Module,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    norm_weight_decay: float = 0.0,
    bias_weight_decay: float = 0.0,
) -> torch.optim.SGD:
    groups = param_groups(model, weight_decay, norm_weight_decay, bias_weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameter (is every layer frozen?)")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)
