"""The glyphs kind of the synthetic dataset: letters told apart only by their inner structure,
deterministic, exact boxes, every size class, class-independent colours, and its wiring
(``data=glyphs``, ``data.synthetic.kind``, the CLI)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from run_helpers import TINY, compose_train

from src.data.synthetic import GLYPH_CATEGORIES, KINDS, ensure_synthetic, make_synthetic_coco
from src.training.config import build_datamodule

# pycocotools' mask decoding under numpy 2, not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train2017", "val2017")
LETTERS = ["E", "F", "P", "B", "R", "H", "K", "N"]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _load(root: Path, split: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(root / "annotations" / f"instances_{split}.json"))


@pytest.fixture(scope="module")
def glyphs(module_tmp) -> Path:
    """100 + 10 images at the default image size: ~400 objects, 39 to 62 per letter."""
    out = module_tmp("glyphs")
    return make_synthetic_coco(out, num_train=100, num_val=10, kind="glyphs")


def test_same_params_same_bytes_and_not_the_shapes_images(tmp_path: Path) -> None:
    kw = {"num_train": 6, "num_val": 2, "image_size": 128, "seed": 3}
    a = _files(make_synthetic_coco(tmp_path / "a", kind="glyphs", **kw))
    b = _files(make_synthetic_coco(tmp_path / "b", kind="glyphs", **kw))
    shapes = _files(make_synthetic_coco(tmp_path / "s", **kw))
    assert a.keys() == b.keys() == shapes.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    # the same background stream, other objects
    assert sum(a[k] != shapes[k] for k in a if k.endswith(".jpg")) >= 6
    marker = json.loads(a["synthetic.json"])
    assert marker["params"]["kind"] == "glyphs" and marker["complete"] is True
    assert marker["font"]["file"].endswith("DejaVuSans-Bold.ttf")
    assert "kind" not in json.loads(shapes["synthetic.json"])["params"]  # as before kinds


def test_categories_are_the_letters_with_sparse_ids_all_used(glyphs: Path) -> None:
    train, val = _load(glyphs, "train2017"), _load(glyphs, "val2017")
    cats = train.dataset["categories"]
    assert [c["name"] for c in cats] == LETTERS
    assert [(c["id"], c["name"]) for c in cats] == list(GLYPH_CATEGORIES)
    ids = [c["id"] for c in cats]
    assert ids != list(range(1, len(ids) + 1))
    assert val.dataset["categories"] == cats
    assert {a["category_id"] for a in train.dataset["annotations"]} == set(ids)
    assert "glyphs" in train.dataset["info"]["description"]


def test_boxes_and_areas_are_those_of_the_masks(glyphs: Path) -> None:
    for split in SPLITS:
        coco = _load(glyphs, split)
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            rle = ann["segmentation"]
            assert rle["size"] == [img["height"], img["width"]]
            m = mask_utils.decode(rle).astype(bool)
            assert ann["area"] == float(m.sum()) > 0
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            tight = [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            assert ann["bbox"] == [float(v) for v in tight] == mask_utils.toBbox(rle).tolist()
            assert ann["iscrowd"] == 0


def test_all_size_classes_and_tiny_glyphs_are_solid(glyphs: Path) -> None:
    coco = _load(glyphs, "train2017")
    anns = coco.dataset["annotations"]
    areas = np.array([a["area"] for a in anns])
    for lo, hi in ((0, 32**2), (32**2, 96**2), (96**2, 1e10)):
        assert ((areas >= lo) & (areas < hi)).mean() > 0.1, np.histogram(
            areas, [0, 1024, 9216, 1e10]
        )
    # the smallest glyphs (~80 px) fill a good part of their box: drawn solid, not as specks
    small = [a for a in anns if a["area"] < 200]
    assert len(small) >= 10
    for a in small:
        w, h = a["bbox"][2:]
        assert min(w, h) >= 5 and a["area"] / (w * h) > 0.3, a
    per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
    assert max(per_image) >= 5 and min(per_image) == 0


def test_colour_and_box_shape_do_not_tell_the_letter(glyphs: Path) -> None:
    """Fill colour and texture are drawn whatever the class, and so is the box's aspect ratio:
    the per-letter means match the overall mean within a few standard errors."""
    coco = _load(glyphs, "train2017")
    rows = []  # category, mean R, G, B inside the mask, log(w / h)
    for img in coco.dataset["images"]:
        pixels = np.asarray(Image.open(glyphs / "train2017" / img["file_name"]), np.float32) / 255
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            rows.append(
                [a["category_id"], *pixels[m].mean(axis=0), np.log(a["bbox"][2] / a["bbox"][3])]
            )
    rows = np.array(rows)
    assert len(rows) >= 300
    overall = rows[:, 1:].mean(axis=0)
    for cat, _ in GLYPH_CATEGORIES:
        own = rows[rows[:, 0] == cat, 1:]
        assert len(own) >= 25, cat
        assert np.abs(own.mean(axis=0) - overall).max() < 0.12, (cat, own.mean(axis=0), overall)


def test_kind_is_checked_and_a_marker_without_kind_is_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"kind='fonts'.*shapes, glyphs"):
        make_synthetic_coco(tmp_path / "x", num_train=1, num_val=1, kind="fonts")
    assert not (tmp_path / "x").exists()
    assert KINDS == ("shapes", "glyphs")
    out, kw = tmp_path / "syn", {"num_train": 2, "num_val": 1, "image_size": 64}
    ensure_synthetic(out, **kw)
    (out / "sentinel").write_text("x")
    ensure_synthetic(out, kind="shapes", **kw)
    assert (out / "sentinel").exists(), "a shapes dataset was remade for kind=shapes"
    ensure_synthetic(out, kind="glyphs", **kw)
    assert not (out / "sentinel").exists(), "not remade although the kind changed"
    assert json.loads((out / "synthetic.json").read_text())["params"]["kind"] == "glyphs"
    (out / "sentinel").write_text("x")
    ensure_synthetic(out, kind="glyphs", **kw)
    assert (out / "sentinel").exists()


def test_data_glyphs_composes_and_builds_its_own_dataset(tmp_path: Path) -> None:
    cfg = compose_train(["data=glyphs", *TINY], tmp_path / "run", tmp_path / "data")
    assert cfg.data.synthetic.kind == "glyphs"
    assert cfg.data.root == cfg.data.synthetic.default_root == str(tmp_path / "data" / "glyphs")
    assert (cfg.model.min_size, cfg.model.max_size) == (128, 128)  # TINY's, over the data's 256
    assert compose_train([], tmp_path, tmp_path).data.synthetic.kind == "shapes"
    build_datamodule(cfg)
    marker = json.loads((tmp_path / "data" / "glyphs" / "synthetic.json").read_text())
    assert marker["params"] == {"num_train": 16, "num_val": 8, "image_size": 128, "seed": 0,
                                "max_objects": 8, "kind": "glyphs"}  # fmt: skip


def test_a_wrong_kind_is_refused_naming_the_key_and_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_train(["data.synthetic.kind=fonts"], tmp_path, tmp_path)
    cause = str(error.value.__cause__)
    assert "data.synthetic.kind" in cause and "fonts" in cause
    assert "shapes" in cause and "glyphs" in cause


def test_cli_kind(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "src.data.synthetic", "--out", str(out), "--num-train", "2",
           "--num-val", "1", "--image-size", "96", "--kind", "glyphs", "--quiet"]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert _files(out) == _files(
        make_synthetic_coco(tmp_path / "api", num_train=2, num_val=1, image_size=96, kind="glyphs")
    )
    bad = subprocess.run([*cmd[:-3], "--kind", "fonts"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "--kind" in bad.stderr and "glyphs" in bad.stderr
