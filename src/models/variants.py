"""The paper's rows (a)-(f) as data: which head, which pyramid switches, which levels.

:func:`resolve_variant` turns a variant name plus the FPN switches into the
:class:`VariantSpec` it means; :func:`anchor_sizes` derives the anchors from the levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from src.models.fpn import PYRAMID_LEVELS, canonical_levels, check_switches

VARIANTS = ("fpn", "c4", "c5", "bottom_up", "no_lateral", "p2_only")
PAPER_ROWS = {"c4": "a", "c5": "b", "fpn": "c", "bottom_up": "d", "no_lateral": "e", "p2_only": "f"}
ANCHOR_SIZES = {"p2": 32, "p3": 64, "p4": 128, "p5": 256, "p6": 512}
ASPECT_RATIOS = (0.5, 1.0, 2.0)

# (lateral, top_down, levels) of the pyramid rows; any other pyramid gets a descriptive name.
_PYRAMID_ROWS = {
    (True, True, PYRAMID_LEVELS): "fpn",
    (True, False, PYRAMID_LEVELS): "bottom_up",
    (False, True, PYRAMID_LEVELS): "no_lateral",
    (True, True, ("p2",)): "p2_only",
}
_PYRAMID_DEFAULTS = {v: k for k, v in _PYRAMID_ROWS.items()}


@dataclass(frozen=True)
class VariantSpec:
    """What a (variant, switches) pair resolves to.

    Attributes:
        name: the paper row (one of VARIANTS) when the spec is one; otherwise
            ``"fpn"`` + ``"-no_lateral"`` / ``"-no_top_down"`` / ``"-levels_p3_p4"`` suffixes
            for whatever differs from row (c), e.g. ``"fpn-no_lateral-levels_p2"``.
        head: ``"fpn"``, ``"c4"`` (res5 head) or ``"c5"`` (2fc head).
        lateral, top_down: the pyramid switches; None for c4/c5.
        levels: feature maps the RPN uses (``p2..p6`` subset, or ``("c4",)``/``("c5",)``);
            RoI pooling uses the same minus ``p6``.
    """

    name: str
    head: str
    lateral: bool | None
    top_down: bool | None
    levels: tuple[str, ...]

    @property
    def paper_row(self) -> str | None:
        """Letter of the paper's table row, or None for a spec that is not one."""
        return PAPER_ROWS.get(self.name)

    def as_dict(self) -> dict[str, object]:
        """Plain values (for results.json and checkpoints): ``variant``, ``row`` (the paper's
        letter or None), ``head``, ``lateral``, ``top_down``, ``levels`` (a list)."""
        return {"variant": self.name, "row": self.paper_row, "head": self.head,
                "lateral": self.lateral, "top_down": self.top_down, "levels": list(self.levels)}  # fmt: skip


def _pyramid_name(lateral: bool, top_down: bool, levels: tuple[str, ...]) -> str:
    row = _PYRAMID_ROWS.get((lateral, top_down, levels))
    if row is not None:
        return row
    parts = ["fpn"]
    if not lateral:
        parts.append("no_lateral")
    if not top_down:
        parts.append("no_top_down")
    if levels != PYRAMID_LEVELS:
        parts.append("levels_" + "_".join(levels))
    return "-".join(parts)


def resolve_variant(
    variant: str,
    *,
    lateral: bool | None = None,
    top_down: bool | None = None,
    levels: Sequence[str] | None = None,
) -> VariantSpec:
    """Resolve a variant name and FPN switches (None: the variant's own default) to a spec.

    ``fpn`` with ``lateral=False`` is row (e) ``no_lateral``; ``p2_only`` is ``fpn`` with
    ``levels=("p2",)``; a spec that matches a paper row always carries that row's name.

    Raises:
        ValueError: unknown variant; FPN switches given to c4/c5; both switches off;
            unknown levels, or levels with no RoI level (p6 alone feeds only the RPN).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not allowed: choose one of {', '.join(VARIANTS)}")
    if variant in ("c4", "c5"):
        given = {"lateral": lateral, "top_down": top_down, "levels": levels}
        given = {k: v for k, v in given.items() if v is not None}
        if given:
            raise ValueError(
                f"variant={variant!r} has no feature pyramid, so FPN switches do not apply: "
                f"got {given}; leave them null or pick one of "
                f"{', '.join(v for v in VARIANTS if v not in ('c4', 'c5'))}"
            )
        return VariantSpec(variant, variant, None, None, (variant,))
    d_lateral, d_top_down, d_levels = _PYRAMID_DEFAULTS[variant]
    lateral = d_lateral if lateral is None else bool(lateral)
    top_down = d_top_down if top_down is None else bool(top_down)
    check_switches(lateral, top_down)
    levels = d_levels if levels is None else canonical_levels(levels)
    if levels == ("p6",):
        raise ValueError(
            "levels=('p6',) is not allowed: p6 feeds only the RPN; include one of p2, p3, p4, p5 "
            "for RoI pooling"
        )
    return VariantSpec(_pyramid_name(lateral, top_down, levels), "fpn", lateral, top_down, levels)


def anchor_sizes(levels: Sequence[str], scale: float = 1.0) -> tuple[tuple[float, ...], ...]:
    """Anchor sizes per feature map: one of {32..512} per pyramid level by stride, or all five
    on a single map (p2_only, c4, c5); every size times ``scale``."""
    sizes = tuple(ANCHOR_SIZES.values())
    per_map = [sizes] if len(levels) == 1 else [(ANCHOR_SIZES[lv],) for lv in levels]

    def scaled(s: int) -> float:
        v = s * scale
        return int(v) if float(v).is_integer() else v

    return tuple(tuple(scaled(s) for s in group) for group in per_map)
