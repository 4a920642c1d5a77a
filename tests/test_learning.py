"""Proof that the detector learns on real COCO images, through `python -m src.train`, and that
what src.eval / src.predict write from that checkpoint is right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from run_helpers import results, run_module

# Learn 4 coco_tiny training images by heart and validate on the same images.
OVERFIT = [
    "data=coco_tiny",
    "debug=overfit",
    "callbacks.prediction_panel.num_images=2",
    "~callbacks.progress_bar",
]


@pytest.fixture(scope="module")
def overfit_run(coco_tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("overfit")
    proc = run_module("src.train", [*OVERFIT, f"hydra.run.dir={out}"], timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def test_detector_learns_real_coco_images(overfit_run):
    record = results(overfit_run)
    assert record["status"] == "ok"
    assert record["metrics"]["val/map_50"] >= 0.9, record["metrics"]
    assert (overfit_run / "checkpoints" / "last.ckpt").is_file()
    assert sorted((overfit_run / "csv" / "predictions").glob("epoch_*.png"))
    losses = [
        float(r["train/loss"])
        for r in _csv_rows(overfit_run / "csv" / "metrics.csv")
        if r.get("train/loss")
    ]
    assert losses[-1] < 0.5 * losses[0]


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def test_eval_results_json_scores_the_same_in_pycocotools(overfit_run, coco_tiny, tmp_path):
    ckpt = overfit_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    proc = run_module(
        "src.eval",
        ["data=coco_tiny", "split=train2017", "data.max_images=4", f"ckpt_path={ckpt}",
         f"hydra.run.dir={out}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    detections = json.loads((out / "coco_results.json").read_text())
    assert detections and all(len(d["bbox"]) == 4 for d in detections)

    gt = COCO(str(coco_tiny / "annotations" / "instances_train2017.json"))
    image_ids = sorted({d["image_id"] for d in detections})
    coco_eval = COCOeval(gt, gt.loadRes(detections), "bbox")
    coco_eval.params.imgIds = image_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert len(image_ids) == 4
    assert coco_eval.stats[0] == pytest.approx(metrics["test/map"], abs=1e-3)
    assert coco_eval.stats[1] == pytest.approx(metrics["test/map_50"], abs=1e-3)


def test_predict_draws_and_writes_json(overfit_run, coco_tiny, tmp_path):
    ckpt = overfit_run / "checkpoints" / "last.ckpt"
    images = sorted((coco_tiny / "train2017").glob("*.jpg"))[:2]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for img in images:
        (inputs / img.name).symlink_to(img)
    out = tmp_path / "out"
    proc = run_module(
        "src.predict",
        [f"ckpt_path={ckpt}", f"input={inputs}", f"hydra.run.dir={out}", "score_threshold=0.3"],
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["file"]).name for r in records] == [p.name for p in images]
    assert all((out / f"{p.stem}.png").is_file() for p in images)
    assert any(r["detections"] for r in records)
    names = {
        c["name"]
        for c in json.loads((coco_tiny / "annotations/instances_train2017.json").read_text())[
            "categories"
        ]
    }
    assert all(d["category"] in names for r in records for d in r["detections"])


def test_predict_refuses_a_missing_checkpoint(tmp_path):
    proc = run_module("src.predict", [f"ckpt_path={tmp_path}/x.ckpt", f"input={tmp_path}",
                                      f"hydra.run.dir={tmp_path}/out"])  # fmt: skip
    assert proc.returncode != 0
    assert "x.ckpt" in proc.stderr
