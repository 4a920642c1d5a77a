"""The diagnostic that stops the RPN's loss at the features (row (f)'s one map, two tasks)."""

from __future__ import annotations

import pytest
import torch

from src.models.detector import build_detector

SMALL = {"widths": (8, 8, 16, 16, 32), "out_channels": 16, "representation_size": 32}
COMMON = dict(min_size=128, max_size=128, anchor_scale=0.25, **SMALL)


def _grads_of(model, loss_keys) -> dict[str, torch.Tensor | None]:
    """Gradients of every parameter after backward of the sum of ``loss_keys`` of one step."""
    torch.manual_seed(0)
    image = torch.rand(3, 128, 128)
    target = {"boxes": torch.tensor([[8.0, 8.0, 60.0, 50.0], [70.0, 70.0, 90.0, 95.0]]),
              "labels": torch.tensor([1, 2])}  # fmt: skip
    model.train()
    losses = model([image], [target])
    sum(losses[k] for k in loss_keys).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def _reaches(grads, prefix) -> bool:
    return any(
        g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)
    )


@pytest.mark.parametrize("variant", ["p2_only", "fpn"])
def test_rpn_loss_stops_at_the_features_and_the_heads_loss_still_trains_them(variant):
    rpn_losses = ("loss_objectness", "loss_rpn_box_reg")
    head_losses = ("loss_classifier", "loss_box_reg")
    torch.manual_seed(0)
    plain = build_detector(variant, "simple", 3, **COMMON)
    torch.manual_seed(0)
    detached = build_detector(variant, "simple", 3, rpn_detach_features=True, **COMMON)
    assert plain.state_dict().keys() == detached.state_dict().keys()  # checkpoints alike

    # the plain RPN's loss trains the backbone and pyramid; the detached one's only its head
    assert _reaches(_grads_of(plain, rpn_losses), "backbone.")
    grads = _grads_of(detached, rpn_losses)
    assert not _reaches(grads, "backbone.")
    assert _reaches(grads, "rpn.head.")

    # the heads' loss reaches the features either way, with the same gradient
    plain.zero_grad()
    detached.load_state_dict(plain.state_dict())
    mine, theirs = _grads_of(detached, head_losses), _grads_of(plain, head_losses)
    assert _reaches(mine, "backbone.")
    for name, g in theirs.items():
        if name.startswith("backbone.") and g is not None:
            torch.testing.assert_close(mine[name], g)

    # the forward pass is unchanged: same losses from the same weights
    detached.zero_grad()
    torch.manual_seed(1)
    a = detached([torch.rand(3, 128, 128)], [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]),
                                               "labels": torch.tensor([1])}])  # fmt: skip
    torch.manual_seed(1)
    b = plain([torch.rand(3, 128, 128)], [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]),
                                            "labels": torch.tensor([1])}])  # fmt: skip
    for k in a:
        torch.testing.assert_close(a[k], b[k])


@pytest.mark.parametrize("task", ["rpn", "fast_rcnn"])
def test_detaching_the_rpn_is_refused_where_it_means_nothing(task):
    with pytest.raises(
        ValueError, match=f"rpn_detach_features=true is not allowed with task='{task}'"
    ):
        build_detector("p2_only", "simple", 3, task=task, rpn_detach_features=True, **COMMON)


def test_a_bad_value_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"rpn_detach_features='yes' is not allowed"):
        build_detector("p2_only", "simple", 3, rpn_detach_features="yes", **COMMON)


def test_the_config_refuses_it_with_another_task_before_anything_is_built(tmp_path):
    from run_helpers import TINY, compose_train

    from src.training.config import ConfigError, check

    cfg = compose_train([*TINY, "experiment=table1/f_p2_only", "model.rpn_detach_features=true"],
                        tmp_path, tmp_path / "data")  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.rpn_detach_features=true .* model\.task=rpn"):
        check(cfg)
    cfg = compose_train([*TINY, "experiment=f_p2_only", "model.rpn_detach_features=true"],
                        tmp_path, tmp_path / "data")  # fmt: skip
    check(cfg)
