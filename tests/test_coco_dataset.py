"""CocoDetection on real COCO 2017 images (FPN_COCO_TINY): targets checked against the json itself."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import src.data.coco_index as coco_index
from src.data.coco import CocoDetection, collate_detection

SPLITS = ("train2017", "val2017")


def read_json(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def expected_targets(doc: dict, *, train: bool) -> dict[int, dict]:
    """Per image id: boxes XYXY clipped, category ids, iscrowd, area, straight from the json
    (written independently of the index code, in plain Python)."""
    size = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    out = {i: {"boxes": [], "category_ids": [], "iscrowd": [], "area": []} for i in size}
    for a in doc["annotations"]:
        w, h = size[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        x1, y1 = min(max(x, 0), w), min(max(y, 0), h)
        x2, y2 = min(max(x + bw, 0), w), min(max(y + bh, 0), h)
        if x2 - x1 < 1 or y2 - y1 < 1 or (train and a["iscrowd"]):
            continue
        entry = out[a["image_id"]]
        entry["boxes"].append([x1, y1, x2, y2])
        entry["category_ids"].append(a["category_id"])
        entry["iscrowd"].append(a["iscrowd"])
        entry["area"].append(a["area"])
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_targets_match_the_json(coco_tiny: Path, split: str) -> None:
    doc = read_json(coco_tiny, split)
    for train in (True, False):
        dataset = CocoDetection(coco_tiny, split, train=train, filter_empty=False)
        assert len(dataset) == 80
        expected = expected_targets(doc, train=train)
        assert sorted(expected) == dataset.image_ids.tolist()
        for i in range(len(dataset)):
            target = dataset.target(i)
            want = expected[target["image_id"]]
            boxes = target["boxes"]
            assert boxes.dtype == torch.float32 and boxes.format.value == "XYXY"
            torch.testing.assert_close(
                boxes.as_subclass(torch.Tensor).reshape(-1, 4),
                torch.tensor(want["boxes"], dtype=torch.float32).reshape(-1, 4),
            )
            labels = target["labels"]
            assert labels.dtype == torch.int64 and (len(labels) == 0 or labels.min() >= 1)
            ids = [dataset.category_ids[lab - 1] for lab in labels.tolist()]
            assert ids == want["category_ids"]  # contiguous labels map back to COCO ids
            if not train:
                assert target["iscrowd"].tolist() == want["iscrowd"]
                assert target["area"].dtype == torch.float32
                torch.testing.assert_close(
                    target["area"], torch.tensor(want["area"], dtype=torch.float32)
                )
            else:
                assert "iscrowd" not in target and "area" not in target


def test_box_counts_are_the_json_minus_crowd_and_degenerate(coco_tiny: Path) -> None:
    for split, total, crowd in (("train2017", 705, 6), ("val2017", 815, 11)):
        doc = read_json(coco_tiny, split)
        assert len(doc["annotations"]) == total  # the data set we think we test on
        assert sum(a["iscrowd"] for a in doc["annotations"]) == crowd
        degenerate = sum(1 for t in expected_targets(doc, train=False).values() for _ in t["boxes"])
        degenerate = total - degenerate
        train = CocoDetection(coco_tiny, split, train=True)
        evaluation = CocoDetection(coco_tiny, split, train=False)
        assert (
            sum(len(train.target(i)["boxes"]) for i in range(len(train)))
            == total - crowd - degenerate
        )
        n_eval = [len(evaluation.target(i)["boxes"]) for i in range(len(evaluation))]
        assert sum(n_eval) == total - degenerate
        assert sum(int(evaluation.target(i)["iscrowd"].sum()) for i in range(80)) == crowd


def test_category_mapping_round_trips(coco_tiny: Path) -> None:
    doc = read_json(coco_tiny, "val2017")
    dataset = CocoDetection(coco_tiny, "val2017", train=False)
    json_ids = sorted(c["id"] for c in doc["categories"])
    assert dataset.category_ids == json_ids and len(json_ids) == 80 and json_ids[-1] == 90
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert dataset.category_names == [names[i] for i in json_ids]
    to_label = dataset.category_id_to_label
    assert [dataset.category_ids[to_label[c] - 1] for c in json_ids] == json_ids
    assert sorted(to_label.values()) == list(range(1, 81))


def test_images_are_rgb_uint8_of_the_json_size(coco_tiny: Path) -> None:
    dataset = CocoDetection(coco_tiny, "val2017", train=False)
    for i in range(0, 80, 20):
        image, target = dataset[i]
        info = dataset.image_info(i)
        assert image.dtype == torch.uint8 and tuple(image.shape) == (
            3,
            info["height"],
            info["width"],
        )
        assert target["boxes"].canvas_size == (info["height"], info["width"])
        assert dataset.aspect_ratios[i] == pytest.approx(info["width"] / info["height"])


def _zip_layout(src: Path, dst: Path) -> Path:
    """COCO's archive layout built from the folder layout: images stored or deflated."""
    dst.mkdir()
    for split, method in (("train2017", zipfile.ZIP_STORED), ("val2017", zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(dst / f"{split}.zip", "w", method) as zf:
            for path in sorted((src / split).iterdir()):
                zf.write(path, f"{split}/{path.name}")
    with zipfile.ZipFile(dst / "annotations_trainval2017.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for split in SPLITS:
            zf.write(
                src / "annotations" / f"instances_{split}.json",
                f"annotations/instances_{split}.json",
            )
    return dst


def test_zip_archives_give_identical_samples(coco_tiny: Path, tmp_path: Path) -> None:
    zipped = _zip_layout(coco_tiny, tmp_path / "zipped")
    for split in SPLITS:
        for train in (True, False):
            folder = CocoDetection(coco_tiny, split, train=train)
            archive = CocoDetection(zipped, split, train=train)
            assert archive.source.image_zip is not None and archive.source.annotation_member
            assert len(folder) == len(archive) == 80
            for i in range(len(folder)):
                if not train:  # decoding once per split is enough
                    assert torch.equal(folder.load_image(i), archive.load_image(i))
                target_a, target_b = folder.target(i), archive.target(i)
                assert target_a.keys() == target_b.keys()
                for key, value in target_a.items():
                    assert torch.equal(torch.as_tensor(value), torch.as_tensor(target_b[key])), key


def test_missing_zip_member_named(coco_tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "zipped"
    root.mkdir()
    with zipfile.ZipFile(root / "val2017.zip", "w") as zf:
        zf.writestr("val2017/readme.txt", "no images here")
    shutil.copytree(coco_tiny / "annotations", root / "annotations")
    dataset = CocoDetection(root, "val2017", train=False)
    name = dataset.image_info(0)["file_name"]
    with pytest.raises(
        FileNotFoundError, match=rf"val2017\.zip:val2017/{name} \(image id \d+\) is not in"
    ):
        dataset[0]


def test_index_is_cached_and_rebuilt_when_the_json_changes(
    coco_tiny: Path, tmp_path, monkeypatch
) -> None:
    root = tmp_path / "copy"
    (root / "annotations").mkdir(parents=True)
    os.symlink(coco_tiny / "val2017", root / "val2017")
    json_path = root / "annotations" / "instances_val2017.json"
    shutil.copy(coco_tiny / "annotations" / "instances_val2017.json", json_path)
    cache = tmp_path / "cache"
    CocoDetection(root, "val2017", train=False, cache_dir=cache)
    assert len(list(cache.glob("coco_index_val2017_*.npz"))) == 1

    def no_parse(*args, **kwargs):
        raise AssertionError("the json was parsed again despite a valid cache")

    with monkeypatch.context() as m:
        m.setattr(coco_index, "build_index", no_parse)
        assert len(CocoDetection(root, "val2017", train=False, cache_dir=cache)) == 80

    doc = json.loads(json_path.read_text())
    doc["images"] = doc["images"][:10]
    kept = {im["id"] for im in doc["images"]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in kept]
    json_path.write_text(json.dumps(doc))
    assert len(CocoDetection(root, "val2017", train=False, cache_dir=cache)) == 10


def test_max_images_takes_the_first_ids_after_filtering(coco_tiny: Path) -> None:
    full = CocoDetection(coco_tiny, "train2017", train=True)
    first = CocoDetection(coco_tiny, "train2017", train=True, max_images=6)
    assert len(first) == 6 and first.image_ids.tolist() == sorted(full.image_ids.tolist())[:6]
    with pytest.raises(ValueError, match="max_images=0"):
        CocoDetection(coco_tiny, "train2017", train=True, max_images=0)


def test_collate_keeps_pairs_and_drops_skipped(coco_tiny: Path) -> None:
    dataset = CocoDetection(coco_tiny, "val2017", train=False)
    images, targets = collate_detection([dataset[0], None, dataset[1]])
    assert len(images) == len(targets) == 2
    assert [t["image_id"] for t in targets] == dataset.image_ids[:2].tolist()
    assert np.all([img.shape[0] == 3 for img in images])


def test_fast_and_checked_json_readers_agree(coco_tiny: Path) -> None:
    from src.data import coco_json

    for split in SPLITS:
        data = (coco_tiny / "annotations" / f"instances_{split}.json").read_bytes()
        coco_json._DECODER.decode(data)  # real COCO passes the strict schema: the fast path
        fast, checked = coco_json.read_columns(data, split), coco_json._checked_columns(data, split)
        for field in fast.__dataclass_fields__:
            a, b = getattr(fast, field), getattr(checked, field)
            assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=False), field
