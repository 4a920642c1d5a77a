"""The paper's numbers (ResNet-50, COCO minival, Lin et al. 2017), in percent, keyed by our
variant names and our metric keys (``src.analysis.metrics``), one dict per row of each table."""

from __future__ import annotations

from src.analysis.metrics import paper_columns


def _table(name: str, rows: dict[str, tuple[float, ...]]) -> dict[str, dict[str, float]]:
    keys = [m.key for m in paper_columns(name)]
    assert all(len(v) == len(keys) for v in rows.values()), name
    return {variant: dict(zip(keys, values)) for variant, values in rows.items()}


# Table 1: the RPN alone; AR100, AR1k, then AR1k for small, medium, large objects.
TABLE1 = _table("Table 1", {
    "c4": (36.1, 48.3, 32.0, 58.7, 62.2),
    "c5": (36.3, 44.9, 25.3, 55.5, 64.2),
    "fpn": (44.0, 56.3, 44.9, 63.4, 66.2),
    "bottom_up": (37.4, 49.5, 30.5, 59.9, 68.0),
    "no_lateral": (34.5, 46.1, 26.5, 57.4, 64.7),
    "p2_only": (38.4, 51.3, 35.1, 59.7, 67.6),
})  # fmt: skip
# Table 2: Fast R-CNN on a fixed set of proposals (Table 1's FPN row, Section 5.2.1); AP@0.5, AP,
# AP_s/m/l. Rows (a)/(b): conv5 head on C4 / 2fc head on C5; (c)-(f): 2fc heads on the pyramid.
TABLE2 = _table("Table 2", {
    "c4": (54.7, 31.9, 15.7, 36.5, 45.5),
    "c5": (52.9, 28.8, 11.9, 32.4, 43.4),
    "fpn": (56.9, 33.9, 17.8, 37.7, 45.8),
    "bottom_up": (44.9, 24.9, 10.9, 24.4, 38.5),
    "no_lateral": (54.0, 31.3, 13.3, 35.2, 45.3),
    "p2_only": (56.3, 33.4, 17.3, 37.3, 45.6),
})  # fmt: skip
# Table 3: Faster R-CNN, rows (a)-(c) (the paper has no (d)-(f) here); AP@0.5, AP, AP_s/m/l.
TABLE3 = _table("Table 3", {
    "c4": (53.1, 31.6, 13.2, 35.6, 47.1),
    "c5": (51.7, 28.0, 9.6, 31.9, 43.1),
    "fpn": (56.9, 33.9, 17.8, 37.7, 45.8),
})  # fmt: skip
TABLES = {"Table 1": TABLE1, "Table 2": TABLE2, "Table 3": TABLE3}
