"""python -m src.analysis.sizes: a data set's objects per COCO size bin (what AP_s/m/l average over)."""

from __future__ import annotations

import json
from pathlib import Path

from run_helpers import run_module

from src.analysis.sizes import annotation_file, size_counts


def _annotations(path: Path, areas: list[float], crowd: int = 0) -> Path:
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "area": a, "iscrowd": 0,
             "bbox": [0, 0, 1, 1]} for i, a in enumerate(areas)]  # fmt: skip
    anns += [{"id": 100 + i, "image_id": 1, "category_id": 1, "area": 5000.0, "iscrowd": 1,
              "bbox": [0, 0, 1, 1]} for i in range(crowd)]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}], "annotations": anns,
                                "categories": [{"id": 1, "name": "a"}]}))  # fmt: skip
    return path


def test_objects_are_binned_by_area_at_32_and_96_squared_without_crowd(tmp_path: Path) -> None:
    # a bound goes to the upper bin: 1024 is medium, 9216 is large
    path = _annotations(tmp_path / "annotations" / "instances_val2017.json",
                        [10.0, 1023.9, 1024.0, 5000.0, 9215.0, 9216.0, 1e6], crowd=2)  # fmt: skip
    assert annotation_file(tmp_path, "val2017") == path
    counts = size_counts(path)
    assert (counts["images"], counts["objects"], counts["crowd"]) == (2, 7, 2)
    assert (counts["small"], counts["medium"], counts["large"]) == (2, 3, 2)
    proc = run_module("src.analysis.sizes", [str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert "| 2 | 7 | 2 | 2 (29%) | 3 (43%) | 2 (29%) |" in proc.stdout


def test_bad_annotation_files_are_refused_naming_file_and_field(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    no_area = _annotations(tmp_path / "no_area.json", [10.0])
    data = json.loads(no_area.read_text())
    del data["annotations"][0]["area"]
    no_area.write_text(json.dumps(data))
    negative = _annotations(tmp_path / "negative.json", [10.0, -4.0])
    not_object = tmp_path / "not_object.json"
    not_object.write_text(json.dumps({"images": [], "annotations": [5]}))
    cases = (
        (broken, "is not a JSON file"),
        (no_area, "annotation 0 (id 1) has area None"),
        (negative, "annotation 1 (id 2) has area -4.0; a number >= 0"),
        (not_object, "annotation 0 is 5; a JSON object is needed"),
        (tmp_path / "nowhere", "neither an annotation file nor a data root"),
    )
    for path, words in cases:
        proc = run_module("src.analysis.sizes", [str(path)])
        assert proc.returncode == 2 and str(path) in proc.stderr and words in proc.stderr


def test_real_coco_bins_agree_with_pycocotools(coco_tiny: Path) -> None:
    """On real COCO, each bin holds the non-crowd annotations that pycocotools' own area filter
    (``getAnnIds(areaRng=...)``, open bounds) finds, less those exactly on a bound."""
    from pycocotools.coco import COCO

    path = annotation_file(coco_tiny, "val2017")
    counts = size_counts(path)
    coco = COCO(str(path))
    on_bound = len([a for a in coco.dataset["annotations"] if a["area"] in (0, 1024, 9216)])
    theirs = {size: len(coco.getAnnIds(areaRng=bounds, iscrowd=False))
              for size, bounds in (("small", [0, 1024]), ("medium", [1024, 9216]),
                                   ("large", [9216, 1e10]))}  # fmt: skip
    assert counts["objects"] == len(coco.getAnnIds(iscrowd=False)) > 100
    assert (
        counts["crowd"] > 0
        and counts["small"] + counts["medium"] + counts["large"] == counts["objects"]
    )
    for size, n in theirs.items():
        assert n <= counts[size] <= n + on_bound, size
