"""The model summary table: every variant, with parameters and FLOPs that add up."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from src.analysis.summary import COLUMNS, main, measure, summary_table
from src.models.detector import VARIANTS, build_detector


def test_summary_table_lists_every_variant():
    table = summary_table("resnet18", (64, 64), num_classes=5, rois=2)
    lines = table.splitlines()
    assert "2 x multiply-adds" in lines[0] and "resnet18" in lines[0]
    assert lines[2] == "| " + " | ".join(COLUMNS) + " |"
    rows = [line.split(" | ") for line in lines[4:]]
    assert [r[0].strip("| ") for r in rows] == list(VARIANTS)
    assert [r[1] for r in rows] == ["(c)", "(a)", "(b)", "(d)", "(e)", "(f)"]


def test_measure_counts_parameters_and_flops():
    row = measure("c5", "resnet18", (64, 96), num_classes=5, rois=1)
    model = build_detector("c5", "resnet18", 5)
    assert row["params (M)"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    parts = row["backbone+FPN GFLOPs"] + row["RPN GFLOPs"] + row["box head GFLOPs"]
    assert row["total GFLOPs"] == pytest.approx(parts)
    # the c5 variant's backbone is torchvision's ResNet-18 without avgpool and fc
    resnet = torchvision.models.resnet18()
    resnet.fc = torch.nn.Identity()
    with FlopCounterMode(display=False) as counter:
        resnet(torch.rand(1, 3, 64, 96))
    assert row["backbone+FPN GFLOPs"] == pytest.approx(counter.get_total_flops() / 1e9)
    more = measure("c5", "resnet18", (64, 96), num_classes=5, rois=2)
    assert more["box head GFLOPs"] == pytest.approx(2 * row["box head GFLOPs"], rel=1e-6)


def test_summary_command_line(capsys):
    main(["--backbone", "simple", "--size", "64", "64", "--num-classes", "3", "--rois", "2",
          "--variants", "c5", "p2_only"])  # fmt: skip
    out = capsys.readouterr().out
    assert "| c5 | (b) |" in out and "| p2_only | (f) |" in out and "| fpn |" not in out
