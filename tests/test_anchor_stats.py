"""Positive RPN anchors per box size: balanced across sizes with FPN, not on P2 alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.analysis.anchor_stats import main, positives_per_box
from src.data.coco import CocoDetection
from src.data.synthetic import ensure_synthetic
from src.models.detector import build_detector

KNOBS = dict(min_size=256, max_size=256, anchor_scale=0.5)


@pytest.fixture(scope="module")
def root(module_tmp) -> Path:
    out = module_tmp("anchors") / "synthetic"
    return ensure_synthetic(out, num_train=12, num_val=2, image_size=256)


@pytest.fixture(scope="module")
def dataset(root) -> CocoDetection:
    return CocoDetection(root, "train2017", train=False)


def large_over_small(variant: str, dataset: CocoDetection) -> float:
    model = build_detector(variant, "resnet18", len(dataset.category_ids) + 1, **KNOBS)
    stats = positives_per_box(model, dataset, num_images=12)
    assert stats["small"][0] > 0 and stats["large"][0] > 0, stats  # both sizes present
    assert all(per_box >= 1 for n, per_box in stats.values() if n)  # matcher keeps a best anchor
    return stats["large"][1] / stats["small"][1]


def test_fpn_balances_positive_anchors_across_sizes_and_p2_alone_does_not(dataset):
    fpn = large_over_small("fpn", dataset)
    p2_only = large_over_small("p2_only", dataset)
    assert 0.33 < fpn < 3.0
    assert p2_only > 10 * fpn


def test_command_prints_a_row_per_variant(root, capsys):
    main([str(root), "--images", "2", "--variants", "c5", "p2_only", "--min-size", "256",
          "--max-size", "256", "--anchor-scale", "0.5"])  # fmt: skip
    out = capsys.readouterr().out
    assert "| c5 |" in out and "| p2_only |" in out


def test_the_cap_on_positives_per_box_balances_p2_alone(dataset):
    model = build_detector(
        "p2_only", "resnet18", len(dataset.category_ids) + 1, rpn_positives_per_box=2, **KNOBS
    )
    stats = positives_per_box(model, dataset, num_images=12)
    assert all(1 <= per_box <= 2 for n, per_box in stats.values() if n), stats
    assert stats["large"][1] / stats["small"][1] < 3.0 < large_over_small("p2_only", dataset)


def test_command_measures_the_capped_rpn(root, capsys):
    main([str(root), "--images", "2", "--variants", "p2_only", "--min-size", "256",
          "--max-size", "256", "--anchor-scale", "0.5", "--positives-per-box", "1"])  # fmt: skip
    row = next(line for line in capsys.readouterr().out.splitlines() if "| p2_only |" in line)
    cells = [cell.split() for cell in row.split("|")[2:5]]  # "1.0 (3 boxes)"
    present = [per_box for per_box, count, _ in cells if count != "(0"]
    assert present and all(per_box == "1.0" for per_box in present), row
