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
# Table 2: Fast R-CNN on a fixed set of proposals (Table 1's FPN row); AP@0.5, AP, AP_s/m/l.
# Only rows (d)-(f) are reproduced here from the text beside Table 3's rows.
TABLE2 = _table("Table 2", {
    "bottom_up": (44.9, 24.9, 10.9, 24.4, 38.5),
    "no_lateral": (54.0, 31.3, 13.3, 35.2, 45.3),
    "p2_only": (56.3, 33.4, 17.3, 37.3, 45.6),
})  # fmt: skip
# Table 3: Faster R-CNN, rows (a)-(c); AP@0.5, AP, AP_s/m/l.
TABLE3 = _table("Table 3", {
    "c4": (53.1, 31.6, 13.2, 35.6, 47.1),
    "c5": (51.7, 28.0, 9.6, 31.9, 43.1),
    "fpn": (56.9, 33.9, 17.8, 37.7, 45.8),
})  # fmt: skip
TABLES = {"Table 1": TABLE1, "Table 2": TABLE2, "Table 3": TABLE3}


def paper_detection(variant: str) -> tuple[str, dict[str, float] | None]:
    """(source table, {metric key: percent}) of a variant's detection AP, or ("", None).

    Today's end-to-end runs are Faster R-CNN: Table 3 where the paper has the row, else
    Table 2 (which measured Fast R-CNN on fixed proposals: compare trends, not digits).
    """
    if variant in TABLE3:
        return "Table 3", TABLE3[variant]
    if variant in TABLE2:
        return "Table 2", TABLE2[variant]
    return "", None
