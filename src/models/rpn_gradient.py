"""An RPN whose loss does not reach the features: a diagnostic, not the paper's.

In Faster R-CNN as torchvision trains it (and the paper's Table 3 does not: it trains the RPN
and Fast R-CNN apart), the RPN's and the RoI heads' losses both flow back into the one set of
features. With a pyramid, each level carries the gradients of the objects of its scale; with
row (f), P2 alone, one map carries both tasks' gradients for every size. Stopping the RPN's
gradient at its input leaves the backbone and pyramid to the RoI heads' loss alone (the RPN's
own head still learns on them), which makes it a test of whether that sharing is what holds
(f) below FPN end to end: compare the (f) - (c) gap with and without it.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def _detached_inputs(head: nn.Module, args: tuple[list[Tensor]]) -> tuple[list[Tensor]]:
    (features,) = args
    return ([f.detach() for f in features],)


def detach_rpn_inputs(rpn_head: nn.Module) -> RemovableHandle:
    """Make ``rpn_head`` (torchvision's ``RPNHead``, called with ``list[Tensor]``, one
    ``[B, C, H_l, W_l]`` per level) see its features detached: the RPN's losses train its own
    conv, objectness and box layers and nothing below them. A forward pre-hook, so the state
    dict and checkpoints are those of the plain head.

    Returns:
        The hook's handle (``.remove()`` restores the plain head).
    """
    return rpn_head.register_forward_pre_hook(_detached_inputs)
