"""The synthetic dataset: deterministic bytes, self-consistent COCO json, multi-scale content,
safe regeneration and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from src.data import synthetic
from src.data.synthetic import ensure_synthetic, make_synthetic_coco

# pycocotools' mask decoding under numpy 2, not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train2017", "val2017")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _load(root: Path, split: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(root / "annotations" / f"instances_{split}.json"))


@pytest.fixture(scope="module")
def dataset(module_tmp) -> Path:
    """40 + 10 images at the default image size."""
    return make_synthetic_coco(module_tmp("synthetic"), num_train=40, num_val=10)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    kw = {"num_train": 9, "num_val": 3, "image_size": 128}
    a = _files(make_synthetic_coco(tmp_path / "a", seed=3, **kw))
    b = _files(make_synthetic_coco(tmp_path / "b", seed=3, **kw))
    c = _files(make_synthetic_coco(tmp_path / "c", seed=4, **kw))
    assert len(a) == 9 + 3 + 2 + 1  # images, two jsons, the marker
    assert a.keys() == b.keys() == c.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in jpgs)


def test_ground_truth_as_detections_scores_ap_1(dataset: Path) -> None:
    for split in SPLITS:
        gt = _load(dataset, split)
        dets = [{**a, "score": 1.0} for a in gt.dataset["annotations"]]
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(
                gt,
                gt.loadRes(
                    [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in dets]
                ),
                "bbox",
            )
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # AP, AP50, AP75, AP_small, AP_medium, AP_large all exactly 1 (-1 would mean a class is empty).
        assert ev.stats[:6] == pytest.approx([1.0] * 6, abs=1e-9), (split, ev.stats[:6])


def test_boxes_and_areas_are_those_of_the_masks(dataset: Path) -> None:
    for split in SPLITS:
        coco = _load(dataset, split)
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            rle = ann["segmentation"]
            assert rle["size"] == [img["height"], img["width"]]
            assert ann["area"] == float(mask_utils.area(rle)) > 0
            assert ann["bbox"] == mask_utils.toBbox(rle).tolist()
            m = mask_utils.decode(rle)
            x, y, w, h = (int(v) for v in ann["bbox"])
            # tight: the mask touches all four sides of its box
            assert m[y, x : x + w].any() and m[y + h - 1, x : x + w].any()
            assert m[y : y + h, x].any() and m[y : y + h, x + w - 1].any()
            assert ann["iscrowd"] == 0


def test_images_match_json_and_aspect_ratios_vary(dataset: Path) -> None:
    shapes = set()
    for split in SPLITS:
        coco = _load(dataset, split)
        for img in coco.dataset["images"]:
            with Image.open(dataset / split / img["file_name"]) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                assert im.size == (img["width"], img["height"])
            shapes.add((img["width"], img["height"]))
    assert shapes == {(256, 256), (256, 192), (192, 256)}


def test_all_size_classes_several_per_image_and_overlaps(dataset: Path) -> None:
    coco = _load(dataset, "train2017")
    areas = np.array([a["area"] for a in coco.dataset["annotations"]])
    # pycocotools' ranges; COCO has 41% small, 34% medium, 24% large
    for lo, hi in ((0, 32**2), (32**2, 96**2), (96**2, 1e10)):
        assert ((areas >= lo) & (areas < hi)).mean() > 0.1, (
            lo,
            hi,
            np.histogram(areas, [0, 1024, 9216, 1e10]),
        )
    per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
    assert max(per_image) >= 5
    overlapping = 0
    for i in coco.getImgIds():
        boxes = np.array([a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=i))]).reshape(
            -1, 4
        )
        ious = mask_utils.iou(boxes.tolist(), boxes.tolist(), [0] * len(boxes))
        overlapping += int((np.triu(np.asarray(ious), 1) > 0.05).any())
    assert overlapping >= 5


def test_some_images_are_empty(dataset: Path) -> None:
    for split in SPLITS:
        coco = _load(dataset, split)
        empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=i)]
        assert 1 <= len(empty) <= 0.15 * len(coco.getImgIds()), (split, empty)


def test_categories_are_not_contiguous_and_all_used_with_unique_ids(dataset: Path) -> None:
    train, val = _load(dataset, "train2017"), _load(dataset, "val2017")
    ids = sorted(train.getCatIds())
    assert len(ids) >= 6 and ids != list(range(1, len(ids) + 1))
    assert train.dataset["categories"] == val.dataset["categories"]
    assert {a["category_id"] for a in train.dataset["annotations"]} == set(ids)
    assert {"info", "licenses"} <= train.dataset.keys()
    for kind in ("images", "annotations"):
        all_ids = [x["id"] for c in (train, val) for x in c.dataset[kind]]
        assert len(set(all_ids)) == len(all_ids) and min(all_ids) >= 1


def test_ensure_regenerates_only_when_parameters_change(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    kw = {"num_train": 2, "num_val": 1, "image_size": 64}
    assert ensure_synthetic(out, **kw) == out
    sentinel = out / "sentinel"
    sentinel.write_text("still here")
    ensure_synthetic(out, **kw)
    assert sentinel.exists(), "regenerated although the parameters were the same"
    ensure_synthetic(out, **{**kw, "seed": 1})
    assert not sentinel.exists(), "not regenerated although the seed changed"
    assert json.loads((out / "synthetic.json").read_text())["params"]["seed"] == 1
    sentinel.write_text("x")
    ensure_synthetic(out, **{**kw, "seed": 1}, force=True)
    assert not sentinel.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"], "temporary folders left behind"


def test_interrupted_generation_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "syn"
    kw = {"num_train": 3, "num_val": 1, "image_size": 64}
    ensure_synthetic(out, **kw)
    before = _files(out)
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) % 2 == 0:  # the second image of each attempt
            raise KeyboardInterrupt
        return render(*args, **kwargs)

    render = synthetic.render_image
    monkeypatch.setattr(synthetic, "render_image", failing_render)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(out, **{**kw, "seed": 5})
    assert _files(out) == before, "the previous complete dataset was damaged"
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "fresh", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_leftovers_of_killed_runs_are_cleaned_and_incomplete_datasets_redone(
    tmp_path: Path,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, foreign = tmp_path / f".syn.tmp-{dead.pid}", tmp_path / f".syn.backup-{dead.pid}"
    stale.mkdir()
    foreign.mkdir()
    out = tmp_path / "syn"
    make_synthetic_coco(out, num_train=1, num_val=1, image_size=64)
    marker = json.loads((out / "synthetic.json").read_text())
    (out / "synthetic.json").write_text(json.dumps({**marker, "complete": False}))
    ensure_synthetic(out, num_train=1, num_val=1, image_size=64)
    assert json.loads((out / "synthetic.json").read_text())["complete"] is True
    assert not stale.exists() and foreign.exists()


def test_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    for make in (ensure_synthetic, make_synthetic_coco):
        with pytest.raises(ValueError, match=r"synthetic\.json"):
            make(tmp_path, num_train=1, num_val=1, image_size=64)
    assert (tmp_path / "annotations" / "instances_train2017.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_train": 0}, "num_train"), ({"image_size": 32}, "image_size"), ({"seed": -1}, "seed"),
     ({"num_val": 2.5}, "num_val"), ({"max_objects": 0}, "max_objects")],
)  # fmt: skip
def test_bad_parameters_are_named(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_synthetic_coco(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "src.data.synthetic", "--out", str(out), "--num-train", "3",
           "--num-val", "2", "--image-size", "96", "--seed", "7"]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "train2017" in run.stdout and "small" in run.stdout
    assert len(list((out / "train2017").glob("*.jpg"))) == 3
    assert len(_load(out, "val2017").getImgIds()) == 2
    # the CLI and the function make the same bytes
    assert _files(out) == _files(
        make_synthetic_coco(tmp_path / "api", num_train=3, num_val=2, image_size=96, seed=7)
    )
    bad = subprocess.run(
        [*cmd[:5], "--num-train", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "num_train" in bad.stderr
