"""The top-down pathway with lateral connections (Lin et al. 2017, Sec. 3), with its ablation switches.

Levels are named by stride: ``c2..c5`` (strides 4..32) in, ``p2..p6`` out. ``p_k`` has the
spatial size of ``c_k``; ``p6`` is ``p5`` subsampled by 2 (for the RPN only). The extra
layers are linear, as in the paper: 1x1 laterals, nearest upsampling, sum, 3x3 outputs.

Switches (rows of the paper's Table 1):

- ``lateral=True, top_down=True`` (c): ``m5 = L5(c5)``, ``m_k = L_k(c_k) + up(m_{k+1})``.
- ``lateral=True, top_down=False`` (d) bottom-up pyramid: ``m_k = L_k(c_k)``.
- ``lateral=False, top_down=True`` (e): ``m5 = L5(c5)``, ``m_k = up(m_{k+1})``; c2..c4 give
  only their spatial size.
- ``p_k = O_k(m_k)`` in all cases; output convolutions exist only for the levels asked for
  (and ``p5`` when only ``p6`` needs it), laterals only where they feed one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

PYRAMID_LEVELS = ("p2", "p3", "p4", "p5", "p6")


def check_switches(lateral: bool, top_down: bool) -> None:
    """Raise ValueError for the one combination with no meaning."""
    if not lateral and not top_down:
        raise ValueError(
            "lateral=False and top_down=False is not allowed: without laterals only c5 enters "
            "the pyramid, and without the top-down path nothing carries it to p2..p4. "
            "Turn one of them on: top_down=False alone is row (d), lateral=False alone row (e)."
        )


def canonical_levels(levels: Sequence[str]) -> tuple[str, ...]:
    """Validate pyramid levels and order them finest first; ValueError names the allowed ones."""
    if isinstance(levels, str):
        levels = (levels,)
    levels = tuple(levels)
    bad = [lv for lv in levels if lv not in PYRAMID_LEVELS]
    if bad or not levels or len(set(levels)) != len(levels):
        raise ValueError(
            f"levels={levels!r} is not allowed: a non-empty list without repeats of "
            f"{', '.join(PYRAMID_LEVELS)}"
        )
    return tuple(sorted(levels, key=PYRAMID_LEVELS.index))


def _output_indices(levels: Sequence[str]) -> list[int]:
    """Indices k of the output convolutions p_k that ``levels`` needs (p6 needs p5)."""
    ks = {int(lv[1]) for lv in levels if lv != "p6"}
    if "p6" in levels:
        ks.add(5)
    return sorted(ks)


def pyramid_inputs(
    levels: Sequence[str], *, lateral: bool = True, top_down: bool = True
) -> tuple[str, ...]:
    """The backbone levels ``c_k`` that a pyramid with these settings reads, finest first."""
    check_switches(lateral, top_down)
    ks = _output_indices(canonical_levels(levels))
    if top_down:
        ks = list(range(ks[0], 6))
    return tuple(f"c{k}" for k in ks)


class FeaturePyramid(nn.Module):
    """Top-down pathway and lateral connections over ``c2..c5``.

    Args:
        in_channels: backbone level -> channels, e.g. ``{"c2": 256, ..., "c5": 2048}``; must
            hold every level in :func:`pyramid_inputs` (others are ignored).
        out_channels: channels d of every p level (the paper's 256).
        lateral: 1x1 lateral connections from c2..c4 (c5 always has its 1x1).
        top_down: the top-down path (nearest upsampling to the lateral's exact size + sum).
        levels: the p levels to return, subset of ``p2..p6``.

    Attributes:
        in_levels: the c levels ``forward`` reads, finest first.
        levels: the p levels ``forward`` returns, finest first.
        out_channels: d.
        lateral: ``ModuleDict`` ``{"c5": Conv2d 1x1, ...}`` (state-dict keys ``lateral.c5.*``).
        output: ``ModuleDict`` ``{"p5": Conv2d 3x3, ...}`` (state-dict keys ``output.p5.*``).
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        out_channels: int = 256,
        *,
        lateral: bool = True,
        top_down: bool = True,
        levels: Sequence[str] = PYRAMID_LEVELS,
    ) -> None:
        super().__init__()
        self.levels = canonical_levels(levels)
        self.in_levels = pyramid_inputs(self.levels, lateral=lateral, top_down=top_down)
        missing = [lv for lv in self.in_levels if lv not in in_channels]
        if missing:
            raise ValueError(
                f"in_channels has no {', '.join(missing)}: the pyramid for levels={self.levels} "
                f"(lateral={lateral}, top_down={top_down}) reads {', '.join(self.in_levels)}; "
                f"got {', '.join(in_channels) or 'nothing'}"
            )
        if int(out_channels) < 1:
            raise ValueError(f"out_channels={out_channels!r} is not allowed: use an int >= 1")
        self.out_channels = int(out_channels)
        self.use_lateral = bool(lateral)
        self.top_down = bool(top_down)
        with_lateral = self.in_levels if lateral else ("c5",)
        self.lateral = nn.ModuleDict(
            {lv: nn.Conv2d(in_channels[lv], out_channels, 1) for lv in with_lateral}
        )
        self.output = nn.ModuleDict(
            {
                f"p{k}": nn.Conv2d(out_channels, out_channels, 3, padding=1)
                for k in _output_indices(self.levels)
            }
        )
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):  # torchvision's FPN initialisation
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """``{"c2": [B,C2,H2,W2], ...}`` -> ``OrderedDict`` ``{"p2": [B,d,H2,W2], ...}``.

        Only the levels in ``in_levels`` are read; ``p6`` is [B,d,ceil(H5/2),ceil(W5/2)].
        """
        maps: dict[str, Tensor] = {}
        merged: Tensor | None = None
        for c_level in reversed(self.in_levels):  # coarse to fine
            k = c_level[1]
            feature = features[c_level]
            lat = self.lateral[c_level](feature) if c_level in self.lateral else None
            if self.top_down and merged is not None:
                down = F.interpolate(merged, size=feature.shape[-2:], mode="nearest")
                merged = down if lat is None else lat + down
            else:
                merged = lat
            if f"p{k}" in self.output:
                maps[f"p{k}"] = self.output[f"p{k}"](merged)
        if "p6" in self.levels:
            # kernel 1, stride 2: a subsample, exactly torchvision's LastLevelMaxPool
            maps["p6"] = F.max_pool2d(maps["p5"], kernel_size=1, stride=2, padding=0)
        return OrderedDict((lv, maps[lv]) for lv in self.levels)
