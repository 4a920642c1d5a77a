"""Broken COCO data: each case either works as documented or fails naming the file or id."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from src.data.coco import CocoDetection, collate_detection
from src.data.datamodule import CocoDataModule

W, H = 40, 30


def one_image(**extra) -> list[dict]:
    return [{"id": 7, "file_name": "000000000007.jpg", "width": W, "height": H, **extra}]


def box(ann_id: int, bbox: list[float], category_id: int = 3, image_id: int = 7) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox}


def test_missing_annotation_file_names_it_and_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        CocoDetection(tmp_path, "val2017", train=False)
    message = str(err.value)
    assert str(tmp_path / "annotations" / "instances_val2017.json") in message
    assert "val2017.zip" in message and "annotations_trainval2017.zip" in message


def test_missing_image_folder_and_zip_named(coco_writer, tmp_path: Path) -> None:
    coco_writer(tmp_path, "val2017", one_image(), [box(1, [1, 1, 5, 5])])
    with pytest.raises(FileNotFoundError, match=r"train2017/.*train2017\.zip"):
        CocoDetection(tmp_path, "train2017", train=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CocoDetection(tmp_path / "nowhere", "val2017", train=True)


@pytest.mark.parametrize("missing", ["images", "annotations", "categories"])
def test_json_without_a_top_level_key(coco_writer, tmp_path: Path, missing: str) -> None:
    coco_writer(tmp_path, "val2017", one_image(), [box(1, [1, 1, 5, 5])])
    path = tmp_path / "annotations" / "instances_val2017.json"
    doc = json.loads(path.read_text())
    del doc[missing]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"instances_val2017\.json has no '{missing}' list"):
        CocoDetection(tmp_path, "val2017", train=False)


def test_invalid_json_named(coco_writer, tmp_path: Path) -> None:
    coco_writer(tmp_path, "val2017", one_image(), [])
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"instances_val2017\.json is not valid JSON"):
        CocoDetection(tmp_path, "val2017", train=False)


def test_truncated_jpeg_raises_with_file_and_id_or_is_skipped(
    coco_writer, encode_image, tmp_path
) -> None:
    data = encode_image(W, H)
    coco_writer(tmp_path, "val2017", one_image(data=data[: len(data) // 2]), [box(1, [1, 1, 5, 5])])
    dataset = CocoDetection(tmp_path, "val2017", train=False)
    with pytest.raises(ValueError, match=r"000000000007\.jpg \(image id 7\) cannot be decoded"):
        dataset[0]
    skipping = CocoDetection(tmp_path, "val2017", train=False, on_bad_image="skip")
    with pytest.warns(UserWarning, match=r"skipped an unreadable image.*image id 7"):
        assert skipping[0] is None
    assert skipping.num_skipped == 1 and skipping.skipped_image_ids == [7]


def test_png_named_jpg_is_decoded_by_content(coco_writer, encode_image, tmp_path: Path) -> None:
    png = encode_image(W, H, seed=3, fmt="PNG")
    coco_writer(tmp_path, "val2017", one_image(data=png), [box(1, [1, 1, 5, 5])])
    image, _ = CocoDetection(tmp_path, "val2017", train=False)[0]
    expected = torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB")))
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert torch.equal(image.permute(1, 2, 0), expected)  # PNG is lossless: exact pixels


@pytest.mark.parametrize(
    ("mode", "fmt"), [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG")]
)
def test_any_colour_mode_comes_out_rgb(coco_writer, encode_image, tmp_path, mode, fmt) -> None:
    data = encode_image(W, H, seed=5, mode=mode, fmt=fmt)
    coco_writer(tmp_path, "val2017", one_image(data=data), [box(1, [1, 1, 5, 5])])
    image, _ = CocoDetection(tmp_path, "val2017", train=False)[0]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)
    # decoders may round differently (CMYK, JPEG IDCT); a wrong conversion is off by far more
    assert np.abs(image.permute(1, 2, 0).numpy().astype(np.int16) - reference).mean() < 2.0
    if mode in ("L", "LA"):
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_degenerate_boxes_dropped_in_one_summary_warning(coco_writer, tmp_path: Path) -> None:
    anns = [
        box(1, [5, 5, 10, 10]),  # fine
        box(2, [5, 5, 0, 10]),  # zero width
        box(3, [5, 5, 10, 0.5]),  # lower than 1 px
        box(4, [W + 5, 2, 10, 10]),  # right of the image: nothing left after clipping
        box(5, [-4, -3, 10, 8]),  # partly outside: clipped
    ]
    coco_writer(tmp_path, "val2017", one_image(), anns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetection(tmp_path, "val2017", train=False)
    dropped = [w for w in caught if "dropped" in str(w.message)]
    assert len(dropped) == 1, [str(w.message) for w in caught]
    message = str(dropped[0].message)
    assert (
        "dropped 3 boxes" in message
        and "2, 3, 4" in message
        and "1 other boxes were clipped" in message
    )
    target = dataset.target(0)
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor), torch.tensor([[5.0, 5, 15, 15], [0, 0, 6, 5]])
    )
    assert dataset.index.ann_ids.tolist() == [1, 5]


def test_box_partly_outside_is_clipped_to_the_image(coco_writer, tmp_path: Path) -> None:
    coco_writer(tmp_path, "val2017", one_image(), [box(1, [30, 20, 25, 25])])
    boxes = CocoDetection(tmp_path, "val2017", train=True).target(0)["boxes"]
    assert boxes.tolist() == [[30.0, 20.0, W, H]] and boxes.canvas_size == (H, W)


def test_unknown_category_named_with_annotation_id(coco_writer, tmp_path: Path) -> None:
    coco_writer(tmp_path, "val2017", one_image(), [box(1, [1, 1, 5, 5]), box(42, [1, 1, 5, 5], 4)])
    with pytest.raises(ValueError, match=r"annotation 42 has category_id 4, which is not in"):
        CocoDetection(tmp_path, "val2017", train=False)


def test_unknown_image_id_and_malformed_fields_named(coco_writer, tmp_path: Path) -> None:
    coco_writer(tmp_path, "val2017", one_image(), [box(9, [1, 1, 5, 5], image_id=8)])
    with pytest.raises(ValueError, match=r"annotation 9 refers to image id 8"):
        CocoDetection(tmp_path, "val2017", train=False)
    coco_writer(tmp_path, "val2017", one_image(), [box(9, [1, 1, 5])])
    with pytest.raises(ValueError, match=r"annotation 9 has bbox=\[1, 1, 5\]"):
        CocoDetection(tmp_path, "val2017", train=False)
    coco_writer(
        tmp_path, "val2017", [{"id": 7, "file_name": "a.jpg", "height": H, "data": None}], []
    )
    with pytest.raises(ValueError, match=r"image 7 has no 'width' field"):
        CocoDetection(tmp_path, "val2017", train=False)


def test_image_of_another_size_than_the_json_says(coco_writer, encode_image, tmp_path) -> None:
    coco_writer(tmp_path, "val2017", one_image(data=encode_image(W + 1, H)), [box(1, [1, 1, 5, 5])])
    with pytest.raises(
        ValueError, match=r"image id 7\) is 41x30 pixels but the annotations say 40x30"
    ):
        CocoDetection(tmp_path, "val2017", train=False)[0]


def _with_missing_file(coco_writer, root: Path, num_images: int = 6) -> None:
    images = [
        {"id": k, "file_name": f"{k:012d}.jpg", "width": W, "height": H}
        for k in range(1, num_images + 1)
    ]
    images[2]["data"] = None  # image id 3 has no file
    anns = [box(10 + k, [1, 1, 8, 8], image_id=k) for k in range(1, num_images + 1)]
    coco_writer(root, "train2017", images, anns)


def test_missing_image_file_named_with_id(coco_writer, tmp_path: Path) -> None:
    _with_missing_file(coco_writer, tmp_path)
    dataset = CocoDetection(tmp_path, "train2017", train=True)
    with pytest.raises(FileNotFoundError, match=r"000000000003\.jpg \(image id 3\) is missing"):
        dataset[2]


def test_skip_mode_finishes_an_epoch_with_workers_and_counts(coco_writer, tmp_path: Path) -> None:
    _with_missing_file(coco_writer, tmp_path)
    dataset = CocoDetection(tmp_path, "train2017", train=True, on_bad_image="skip")
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_detection)
    seen = []
    for _ in range(2):  # two epochs: the count is of distinct images, not of attempts
        for images, targets in loader:
            assert len(images) == len(targets)
            seen += [t["image_id"] for t in targets]
    assert sorted(seen) == [1, 1, 2, 2, 4, 4, 5, 5, 6, 6]
    assert dataset.num_skipped == 1 and dataset.skipped_image_ids == [3]


def test_datamodule_reports_skipped_images(coco_writer, tmp_path: Path) -> None:
    _with_missing_file(coco_writer, tmp_path)
    dm = CocoDataModule(str(tmp_path), val_split="train2017", batch_size=2, on_bad_image="skip")
    dm.setup("fit")
    with pytest.warns(UserWarning, match=r"image id 3\) is missing"):
        batches = list(dm.train_dataloader())
    assert sum(len(images) for images, _ in batches) == 5
    assert dm.skipped_images == {"train": 1, "val": 0}
    with pytest.warns(
        UserWarning, match=r"train2017: 1 unreadable images were skipped \(image ids \[3\]\)"
    ):
        dm.teardown("fit")
