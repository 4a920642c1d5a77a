"""Shared fixtures: the real COCO subset (through FPN_COCO_TINY) and small COCO sets made on the fly."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Category ids with gaps, like COCO's, so that an id/label slip cannot pass unnoticed.
CATEGORIES = [
    {"id": 3, "name": "car"},
    {"id": 7, "name": "train"},
    {"id": 90, "name": "toothbrush"},
]


@pytest.fixture(scope="session", autouse=True)
def _index_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Index caches go to a per-session temp folder, never next to the (shared) test data."""
    previous = os.environ.get("FPN_CACHE_DIR")
    os.environ["FPN_CACHE_DIR"] = str(tmp_path_factory.mktemp("fpn_cache"))
    yield
    if previous is None:
        os.environ.pop("FPN_CACHE_DIR", None)
    else:
        os.environ["FPN_CACHE_DIR"] = previous


@pytest.fixture(scope="module")
def module_tmp(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Path]]:
    """``module_tmp(name)``: a fresh folder for a module's shared fixtures, removed when the
    module is done unless one of its tests failed (then kept, like a failed test's tmp_path).

    Why: pytest keeps every ``tmp_path_factory`` folder until the session ends; our module
    fixtures hold runs with 100-MB checkpoints, and together they filled a CI disk.
    """
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """Real COCO 2017 images (80 train + 80 val) with their annotations; read-only."""
    value = os.environ.get("FPN_COCO_TINY")
    if not value:
        pytest.skip(
            "FPN_COCO_TINY is not set: point it at shared/data/coco_tiny (.ci/run does) "
            "to run the tests on real COCO images"
        )
    root = Path(value)
    if not (root / "annotations" / "instances_val2017.json").is_file():
        pytest.fail(f"FPN_COCO_TINY={value} does not hold annotations/instances_val2017.json")
    return root


def jpeg_bytes(
    width: int, height: int, seed: int = 0, mode: str = "RGB", fmt: str = "JPEG"
) -> bytes:
    """A random image of the given size, encoded (JPEG unless ``fmt`` says otherwise)."""
    rng = np.random.default_rng(seed)
    pixels = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    out = io.BytesIO()
    pixels.convert(mode).save(out, fmt)
    return out.getvalue()


def write_coco(
    root: Path,
    split: str,
    images: list[dict],
    annotations: list[dict],
    categories: list[dict] | None = None,
) -> Path:
    """Writes ``root/{split}/`` + ``root/annotations/instances_{split}.json``.

    ``images``: COCO image records; an optional ``"data"`` key holds the file's bytes
    (default: a random JPEG of the record's size; ``None``: no file is written).
    ``annotations``: records; ``iscrowd`` 0 and ``area`` w*h are filled in when absent.
    """
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    records = []
    for k, im in enumerate(images):
        data = im["data"] if "data" in im else jpeg_bytes(im["width"], im["height"], seed=k)
        if data is not None:
            (root / split / im["file_name"]).write_bytes(data)
        records.append({key: v for key, v in im.items() if key != "data"})
    anns = [{"iscrowd": 0, "area": float(np.prod(a["bbox"][2:4])), **a} for a in annotations]
    doc = {"images": records, "annotations": anns, "categories": categories or CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def simple_split(
    num_images: int, *, portrait_every: int = 3, first_id: int = 1
) -> tuple[list, list]:
    """Small images (every ``portrait_every``-th portrait), each with 1-2 boxes."""
    images, anns = [], []
    for k in range(num_images):
        w, h = (24, 40) if k % portrait_every == 0 else (40, 24)
        image_id = first_id + k
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": w, "height": h}
        )
        for j in range(1 + k % 2):
            anns.append({"id": 100 * image_id + j, "image_id": image_id,
                         "category_id": CATEGORIES[(k + j) % 3]["id"], "bbox": [2 + j, 3, 10, 12]})  # fmt: skip
    return images, anns


@pytest.fixture
def mini_coco(tmp_path: Path) -> Callable[..., Path]:
    """``mini_coco(train=12, val=5)``: a COCO root in tmp_path with tiny random JPEGs."""

    def make(train: int = 12, val: int = 5) -> Path:
        root = tmp_path / "mini_coco"
        write_coco(root, "train2017", *simple_split(train))
        write_coco(root, "val2017", *simple_split(val, first_id=1000))
        return root

    return make


@pytest.fixture
def coco_writer() -> Callable[..., Path]:
    """``write_coco`` (above) as a fixture, for tests that build their own broken sets."""
    return write_coco


@pytest.fixture
def encode_image() -> Callable[..., bytes]:
    """``jpeg_bytes`` (above) as a fixture: random pixels in any PIL mode and format."""
    return jpeg_bytes
