"""The paper's numbers (ResNet-50, COCO minival), keyed by our variant names, in percent."""

from __future__ import annotations

DETECTION_COLUMNS = ("AP50", "AP", "APs", "APm", "APl")
PROPOSAL_COLUMNS = ("AR100", "AR1k", "AR1k_s", "AR1k_m", "AR1k_l")

# Table 1: RPN proposals. AR1k_s/m/l are at 1000 proposals.
TABLE1_RPN = {
    "c4": (36.1, 48.3, 32.0, 58.7, 62.2),
    "c5": (36.3, 44.9, 25.3, 55.5, 64.2),
    "fpn": (44.0, 56.3, 44.9, 63.4, 66.2),
    "bottom_up": (37.4, 49.5, 30.5, 59.9, 68.0),
    "no_lateral": (34.5, 46.1, 26.5, 57.4, 64.7),
    "p2_only": (38.4, 51.3, 35.1, 59.7, 67.6),
}
# Table 3: Faster R-CNN, rows (a)-(c).
TABLE3_FASTER_RCNN = {
    "c4": (53.1, 31.6, 13.2, 35.6, 47.1),
    "c5": (51.7, 28.0, 9.6, 31.9, 43.1),
    "fpn": (56.9, 33.9, 17.8, 37.7, 45.8),
}
# Table 2: Fast R-CNN on fixed FPN proposals, rows (d)-(f) (the paper has no Faster R-CNN
# numbers for them; ours train end to end, so compare trends, not digits).
TABLE2_FAST_RCNN = {
    "bottom_up": (44.9, 24.9, 10.9, 24.4, 38.5),
    "no_lateral": (54.0, 31.3, 13.3, 35.2, 45.3),
    "p2_only": (56.3, 33.4, 17.3, 37.3, 45.6),
}


def paper_detection(variant: str) -> tuple[str, tuple[float, ...] | None]:
    """(source table, AP50/AP/APs/APm/APl) for a variant, or (\"\", None) if the paper has none."""
    if variant in TABLE3_FASTER_RCNN:
        return "Table 3", TABLE3_FASTER_RCNN[variant]
    if variant in TABLE2_FAST_RCNN:
        return "Table 2", TABLE2_FAST_RCNN[variant]
    return "", None
