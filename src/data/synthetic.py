"""A deterministic, multi-scale COCO-format dataset of textured shapes on cluttered backgrounds.

Eight shape categories (ids deliberately not contiguous, so category-mapping bugs show up) are
drawn with random colours and textures, so that only the shape tells the class. Two kinds:
``shapes`` (simple geometric shapes, told apart by edges a few conv layers see) and ``glyphs``
(the bold capitals E F P B R H K N of DejaVu Sans, the font matplotlib ships: one full-height
left stem each, boxes of a class-independent aspect ratio, so that only their inner structure
tells them apart). Object areas span COCO's small (< 32^2 px), medium and large (> 96^2 px)
classes at 256 px images (area bounds scale with ``image_size**2``), several per image, partially
occluding each other; about 5% of the images are empty. Backgrounds carry low-contrast blobs,
lines, noise and high-contrast distractor strokes and arcs that are not objects.

Annotations are modal, like COCO's: ``segmentation`` is the RLE of the object's *visible* pixels
(each object keeps at least ``MIN_VISIBLE`` of its area), ``area`` its pixel count and ``bbox`` the
tight ``[x, y, w, h]`` of those pixels (pixel ``i`` spans ``[i, i + 1)``). Shapes and glyphs
are drawn without anti-aliasing, so the boxes are exact. Each image has its own random stream
``(seed, split, index)``: the same parameters give byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pycocotools import mask as mask_utils
from rich.progress import Progress

from src.data.coco_index import OBJECT_SIZES, object_sizes

# Bump whenever the output for given parameters changes, so ensure_synthetic regenerates.
GENERATOR_VERSION = 1
CATEGORIES = ((1, "circle"), (2, "square"), (3, "triangle"), (5, "star"), (7, "cross"), (8, "ring"),
              (11, "crescent"), (13, "heart"))  # fmt: skip
GLYPH_CATEGORIES = ((1, "E"), (2, "F"), (3, "P"), (5, "B"), (7, "R"), (8, "H"), (11, "K"),
                    (13, "N"))  # fmt: skip
CATEGORIES_BY_KIND = {"shapes": CATEGORIES, "glyphs": GLYPH_CATEGORIES}
KINDS = tuple(CATEGORIES_BY_KIND)
GLYPH_FONT = "fonts/ttf/DejaVuSans-Bold.ttf"  # under matplotlib.get_data_path()
GLYPH_ASPECT = 0.82  # median width / height of a glyph's upright box; each is drawn at
GLYPH_STRETCH = 0.3  # GLYPH_ASPECT * exp(U(-0.3, 0.3)), whatever its natural width
GLYPH_TILT = 12.0  # degrees, either way
SPLITS = {"train2017": (0, 1), "val2017": (1, 1_000_001)}  # name -> (rng stream id, first image id)
EMPTY_EVERY = 20  # images i with i % 20 == 7 are empty: 5%, and one in any split of >= 8
MIN_VISIBLE = 0.65
JPEG_QUALITY = 92
# (probability, min area, max area) at image_size 256; COCO's classes split at 32^2 and 96^2.
SIZE_CLASSES = ((0.40, 80.0, 1024.0), (0.32, 1024.0, 9216.0), (0.28, 10500.0, 24000.0))
MARKER = "synthetic.json"
_DEFAULTS = {"num_train": 600, "num_val": 150, "image_size": 256, "seed": 0, "max_objects": 8}
_INFO = {"description": "FPN synthetic multi-scale shapes", "contributor": "src.data.synthetic",
         "version": str(GENERATOR_VERSION), "url": "", "date_created": ""}  # fmt: skip
_LICENSES = [
    {"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
]


def _circle(n: int = 64, r: float = 1.0, dx: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([dx + r * np.cos(t), r * np.sin(t)], axis=1)


def _unit_shape(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Polygons ``(N, 2)`` around the origin with fill 1 (shape) or 0 (hole), drawn in order."""
    if name == "circle":
        return [(_circle(), 1)]
    if name == "square":
        return [(np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), 1)]
    if name == "triangle":
        a = np.deg2rad(90.0 + 120.0 * np.arange(3) + rng.uniform(-12.0, 12.0, 3))
        return [(np.stack([np.cos(a), np.sin(a)], axis=1), 1)]
    if name == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.55))
        return [(np.stack([r * np.cos(a), r * np.sin(a)], axis=1), 1)]
    if name == "cross":
        t = rng.uniform(0.22, 0.36)
        pts = [(t, t), (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t), (-t, -1), (t, -1),
               (t, -t), (1, -t), (1, t)]  # fmt: skip
        return [(np.array(pts, dtype=float), 1)]
    if name == "ring":
        return [(_circle(), 1), (_circle(r=rng.uniform(0.45, 0.7)), 0)]
    if name == "crescent":  # the bite's circle reaches past the rim (d + r > 1): two tips
        return [(_circle(), 1), (_circle(r=rng.uniform(0.8, 0.95), dx=rng.uniform(0.35, 0.6)), 0)]
    if name == "heart":
        t = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x, y], axis=1) / 16.0, 1)]
    raise AssertionError(name)


def _raster(
    polys: list[tuple[np.ndarray, int]], ox: float, oy: float
) -> tuple[int, int, np.ndarray]:
    """Rasterizes pixel-space polygons offset by (ox, oy); returns the tight (x0, y0, bool mask)."""
    pts = np.concatenate([p for p, _ in polys]) + np.array([ox, oy])
    x0, y0 = math.floor(pts[:, 0].min()), math.floor(pts[:, 1].min())
    w, h = math.ceil(pts[:, 0].max()) - x0 + 1, math.ceil(pts[:, 1].max()) - y0 + 1
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for p, fill in polys:
        draw.polygon((p + np.array([ox - x0, oy - y0])).ravel().tolist(), fill=fill)
    m = np.asarray(im) > 0
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    return x0 + cols[0], y0 + rows[0], m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@functools.cache
def _glyph_font() -> tuple[str, str]:
    """The glyph font's path and sha256 (recorded in the marker: other bytes, other glyphs)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / GLYPH_FONT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the glyphs kind draws its letters with matplotlib's font")
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def _glyph_master(letter: str) -> np.ndarray:
    """The letter's tight bool mask, upright, about 290 px tall (cap height of a 400 px font)."""
    font = ImageFont.truetype(_glyph_font()[0], 400)
    right, bottom = font.getbbox(letter)[2:]
    im = Image.new("L", (right + 8, bottom + 8), 0)
    ImageDraw.Draw(im).text((4, 4), letter, font=font, fill=255)
    m = np.asarray(im) >= 128
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _glyph_mask(letter: str, height: float, aspect: float, theta: float) -> np.ndarray:
    """The tight bool mask of ``letter`` stretched to ``height`` x ``aspect * height`` px and turned
    by ``theta`` radians: the master mask is sampled (nearest) at ``k`` times the resolution and
    each pixel is set where it is at least half covered, so that even ~80 px glyphs are solid."""
    master = _glyph_master(letter)
    hm, wm = master.shape
    cos, sin = math.cos(theta), math.sin(theta)
    width = aspect * height
    wo = math.ceil(width * abs(cos) + height * abs(sin)) + 2
    ho = math.ceil(width * abs(sin) + height * abs(cos)) + 2
    k = min(16, max(1, math.ceil(hm / height)))
    # output (supersampled) -> master: q = S^-1 R^T (p / k - c_out) + c_master
    a = np.diag([wm / width, hm / height]) @ np.array([[cos, sin], [-sin, cos]]) / k
    off = np.array([wm / 2, hm / 2]) - k * a @ np.array([wo / 2, ho / 2])
    im = Image.fromarray(master.astype(np.uint8) * 255).transform(
        (k * wo, k * ho), Image.Transform.AFFINE, (*a[0], off[0], *a[1], off[1]),
        resample=Image.Resampling.NEAREST, fillcolor=0,
    )  # fmt: skip
    m = np.asarray(im.resize((wo, ho), Image.Resampling.BOX)) >= 128
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _glyph_placer(
    letter: str, area: float, theta: float, aspect: float, w: int, h: int
) -> Callable[[np.random.Generator], tuple[int, int, np.ndarray]]:
    """Draws the glyph whose mask has about ``area`` pixels (smaller where it would not fit);
    returns a sampler of positions ``rng -> (x0, y0, mask)``."""
    height = math.sqrt(area / (_glyph_master(letter).mean() * aspect))
    cos, sin = abs(math.cos(theta)), abs(math.sin(theta))
    span = (aspect * cos + sin, aspect * sin + cos)  # the turned box per unit of height
    height = min(height, (0.9 * w - 4) / span[0], (0.9 * h - 4) / span[1])
    m = _glyph_mask(letter, height, aspect, theta)

    def place(rng: np.random.Generator) -> tuple[int, int, np.ndarray]:
        x0, y0 = rng.integers((1, 1), (w - m.shape[1], h - m.shape[0]))
        return int(x0), int(y0), m

    return place


def _shape_placer(
    polys: list[tuple[np.ndarray, int]], area: float, w: int, h: int
) -> Callable[[np.random.Generator], tuple[int, int, np.ndarray]]:
    """Scales unit polygons to about ``area`` pixels (smaller where they would not fit); returns
    a sampler of positions ``rng -> (x0, y0, mask)``."""
    ref = 50.0  # the unit area depends on shape, stretch and rotation: measure it once
    unit_area = _raster([(p * ref, f) for p, f in polys], 0.0, 0.0)[2].sum() / ref**2
    pts = np.concatenate([p for p, _ in polys])
    span = np.ptp(pts, axis=0)
    s = min(math.sqrt(area / unit_area), (0.9 * w - 2) / span[0], (0.9 * h - 2) / span[1])
    polys_px = [(p * s, f) for p, f in polys]
    lo_xy, hi_xy = pts.min(axis=0) * s, pts.max(axis=0) * s

    def place(rng: np.random.Generator) -> tuple[int, int, np.ndarray]:
        ox, oy = rng.uniform(1 - lo_xy, (w - 2, h - 2) - hi_xy)
        return _raster(polys_px, ox, oy)

    return place


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour in [0, 1], kept at least 0.45 (L1) from ``avoid`` when given."""
    for _ in range(20):
        c = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.25, 1)))
        if avoid is None or np.abs(c - avoid).sum() >= 0.45:
            break
    return c.astype(np.float32)


def _texture(h: int, w: int, bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ``(h, w, 3)`` float texture: solid, gradient, stripes or blotches of two colours."""
    c1, c2 = _colour(rng, bg), _colour(rng, bg)
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phi = rng.uniform(0, np.pi)
    u = xx * np.cos(phi) + yy * np.sin(phi)
    if kind == 0:
        t = np.zeros((h, w), np.float32)
    elif kind == 1:
        t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    elif kind == 2:
        # Detail scales with the object, so that texture never hides a small object's outline.
        period = rng.uniform(max(3.0, max(h, w) / 8), max(4.0, max(h, w) / 2.5))
        t = ((u / period + rng.random()) % 1.0 < 0.5).astype(np.float32)
    else:
        cell = int(rng.integers(max(2, max(h, w) // 12), max(3, max(h, w) // 5)))
        coarse = rng.random((h // cell + 1, w // cell + 1)).astype(np.float32)
        t = coarse.repeat(cell, axis=0).repeat(cell, axis=1)[:h, :w]
    tex = c1 + (c2 - c1) * t[..., None]
    return tex + rng.normal(0.0, 0.03, (h, w, 3)).astype(np.float32)


def _background(w: int, h: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cluttered ``(h, w, 3)`` float background and its base colour ``(3,)``."""
    base = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.35), rng.uniform(0.25, 0.8)))

    def rgb(c: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in np.clip(np.round(c * 255), 0, 255))

    im = Image.new("RGB", (w, h), rgb(base))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(4, 12)):  # low-contrast blobs, blurred below
        cx, cy, rx, ry = rng.uniform(0, w), rng.uniform(0, h), *rng.uniform(8, 0.4 * max(w, h), 2)
        draw.ellipse(
            [cx - rx, cy - ry, cx + rx, cy + ry], fill=rgb(base + rng.uniform(-0.12, 0.12, 3))
        )
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(2, 5)))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(2, 8)):  # faint straight lines
        xy = rng.uniform(0, 1, 4) * (w, h, w, h)
        draw.line(
            xy.tolist(), fill=rgb(base + rng.uniform(-0.15, 0.15, 3)), width=int(rng.integers(1, 3))
        )
    for _ in range(rng.integers(1, 6)):  # distractors as contrasted as objects: curves and arcs
        colour, width = rgb(_colour(rng, base)), int(rng.integers(1, 4))
        c, r = rng.uniform(0, 1, 2) * (w, h), rng.uniform(5, 0.25 * max(w, h))
        if rng.random() < 0.5:
            pts = c + rng.uniform(-r, r, (int(rng.integers(2, 5)), 2))
            draw.line(pts.ravel().tolist(), fill=colour, width=width, joint="curve")
        else:
            start = rng.uniform(0, 360)
            draw.arc(
                [*(c - r), *(c + r)], start, start + rng.uniform(60, 270), fill=colour, width=width
            )
    arr = np.asarray(im, dtype=np.float32) / 255.0
    ramp = (
        np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(-0.08, 0.08, 3)
    ).astype(np.float32)
    return arr + ramp + rng.normal(0.0, rng.uniform(0.01, 0.04), arr.shape).astype(np.float32), base


def _objects(
    w: int, h: int, scale2: float, max_objects: int, rng: np.random.Generator, kind: str = "shapes"
) -> list[tuple]:
    """Samples and places objects, biggest first; returns ``(cat_index, x0, y0, mask)`` tuples."""
    n = int(rng.integers(1, max_objects + 1)) if max_objects else 0
    specs = []
    for _ in range(n):
        cat = int(rng.integers(len(CATEGORIES)))
        probs = [p for p, _, _ in SIZE_CLASSES]
        _, lo, hi = SIZE_CLASSES[rng.choice(len(SIZE_CLASSES), p=probs)]
        area = max(36.0, math.exp(rng.uniform(math.log(lo * scale2), math.log(hi * scale2))))
        if kind == "glyphs":  # a small tilt, and an aspect ratio that does not tell the letter
            theta = math.radians(rng.uniform(-GLYPH_TILT, GLYPH_TILT))
            aspect = GLYPH_ASPECT * math.exp(rng.uniform(-GLYPH_STRETCH, GLYPH_STRETCH))
            letter = GLYPH_CATEGORIES[cat][1]
            specs.append((area, cat, _glyph_placer(letter, area, theta, aspect, w, h)))
            continue
        theta, aspect = rng.uniform(0, 2 * np.pi), math.exp(rng.uniform(-0.22, 0.22))
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        stretch = np.diag([math.sqrt(aspect), 1 / math.sqrt(aspect)])
        polys = [(p @ stretch.T @ rot.T, f) for p, f in _unit_shape(CATEGORIES[cat][1], rng)]
        specs.append((area, cat, _shape_placer(polys, area, w, h)))
    specs.sort(key=lambda s: -s[0])

    owner = np.zeros((h, w), np.int16)  # 0: background, k: the k-th placed object
    placed, full, visible = [], [], []
    for _, cat, place in specs:
        for _ in range(20):
            x0, y0, m = place(rng)
            region = owner[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
            lost = np.bincount(region[m], minlength=len(placed) + 1)[1:]
            if all(v - lo >= MIN_VISIBLE * f for v, lo, f in zip(visible, lost, full)):
                visible = [v - lo for v, lo in zip(visible, lost)] + [int(m.sum())]
                full.append(int(m.sum()))
                region[m] = len(placed) + 1
                placed.append((cat, x0, y0, m))
                break
    return [(cat, x0, y0, owner[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] == k + 1)
            for k, (cat, x0, y0, m) in enumerate(placed)]  # fmt: skip


def _image_size(image_size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): square, landscape or portrait, the longer side ``image_size``."""
    short = round(0.75 * image_size)
    return [(image_size, image_size), (image_size, short), (short, image_size)][rng.integers(3)]


def render_image(
    rng: np.random.Generator, image_size: int = 256, max_objects: int = 8, kind: str = "shapes"
) -> tuple[np.ndarray, list[dict]]:
    """One image ``(H, W, 3)`` uint8 with 1..``max_objects`` objects (none if 0) of ``kind``
    (``shapes`` or ``glyphs``) and their annotations (dicts with ``category_id``, ``bbox``,
    ``area``, ``iscrowd``, ``segmentation``). Colours and textures do not depend on the class."""
    w, h = _image_size(image_size, rng)
    img, bg = _background(w, h, rng)
    anns = []
    categories = CATEGORIES_BY_KIND[kind]
    for cat, x0, y0, m in _objects(w, h, (image_size / 256) ** 2, max_objects, rng, kind):
        tex = _texture(m.shape[0], m.shape[1], bg, rng)
        img[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]][m] = tex[m]
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        full = np.zeros((h, w), np.uint8, order="F")
        full[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        rle = mask_utils.encode(full)
        bbox = [x0 + cols[0], y0 + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        anns.append({"category_id": categories[cat][0], "bbox": [float(v) for v in bbox],
                     "area": float(m.sum()), "iscrowd": 0,
                     "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")}})  # fmt: skip
    img += rng.normal(0.0, rng.uniform(0.005, 0.02), img.shape).astype(np.float32)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8), anns


def _params(
    num_train: int, num_val: int, image_size: int, seed: int, max_objects: int, kind: str = "shapes"
) -> dict:
    """The checked parameters as the marker stores them (``kind`` only when not ``shapes``, so
    that the shapes datasets made before there were kinds are still current)."""
    if kind not in KINDS:
        raise ValueError(f"synthetic dataset: kind={kind!r}; expected one of {', '.join(KINDS)}")
    for name, value, lo in (("num_train", num_train, 1), ("num_val", num_val, 1),
                            ("image_size", image_size, 64), ("seed", seed, 0),
                            ("max_objects", max_objects, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"synthetic dataset: {name}={value!r}; expected an integer >= {lo}")
    return {"num_train": int(num_train), "num_val": int(num_val), "image_size": int(image_size),
            "seed": int(seed), "max_objects": int(max_objects),
            **({} if kind == "shapes" else {"kind": kind})}  # fmt: skip


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n")


def _read_marker(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _size_counts(areas: list[float]) -> dict[str, int]:
    counts = np.bincount(object_sizes(areas), minlength=len(OBJECT_SIZES))
    return {name: int(n) for name, n in zip(OBJECT_SIZES, counts)}


def make_synthetic_coco(out_dir: str | Path, *, num_train: int = 600, num_val: int = 150,
                        image_size: int = 256, seed: int = 0, progress: bool = False,
                        max_objects: int = 8, kind: str = "shapes") -> Path:  # fmt: skip
    """Writes the dataset in COCO's layout and returns ``out_dir``.

    Layout: ``{train2017,val2017}/<12-digit image id>.jpg``,
    ``annotations/instances_{train2017,val2017}.json`` and ``synthetic.json`` (the parameters,
    ``complete`` and per-split counts). Image sizes are ``image_size`` square or with the shorter
    side ``0.75 * image_size`` (both orientations); 0 to ``max_objects`` objects per image;
    ``kind``: ``shapes`` or ``glyphs`` (see the module's docstring).

    Raises:
        ValueError: a bad parameter, or ``out_dir`` is a non-empty folder not made by this module
            (it is never overwritten).
    """
    params = _params(num_train, num_val, image_size, seed, max_objects, kind)
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if _read_marker(out_dir) is None:
            raise ValueError(f"{out_dir} is a non-empty folder without {MARKER}: not a synthetic "
                             "dataset, so it is left alone; choose an empty or new folder")  # fmt: skip
        for name in (*SPLITS, "annotations"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    # Written first so that an interrupted run is still recognised as ours (and as incomplete).
    marker = {
        "generator": "src.data.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "complete": False,
    }
    info, supercategory = _INFO, "shape"
    if kind == "glyphs":
        marker["font"] = {"file": GLYPH_FONT, "sha256": _glyph_font()[1]}
        info, supercategory = {**_INFO, "description": "FPN synthetic multi-scale glyphs"}, "letter"
    _write_json(out_dir / MARKER, marker)
    categories = [{"id": i, "name": n, "supercategory": supercategory}
                  for i, n in CATEGORIES_BY_KIND[kind]]  # fmt: skip
    counts = {"train2017": params["num_train"], "val2017": params["num_val"]}
    stats = {}
    with Progress(disable=not progress, transient=True) as bar:
        for split, (stream, first_id) in SPLITS.items():
            task = bar.add_task(f"synthetic {split}", total=counts[split])
            (out_dir / split).mkdir()
            images, anns = [], []
            for i in range(counts[split]):
                image_id = first_id + i
                rng = np.random.default_rng([seed, stream, i])
                n_max = 0 if i % EMPTY_EVERY == 7 else max_objects
                img, objs = render_image(rng, image_size, n_max, kind)
                name = f"{image_id:012d}.jpg"
                Image.fromarray(img).save(
                    out_dir / split / name, "JPEG", quality=JPEG_QUALITY, subsampling=0
                )
                images.append({"id": image_id, "file_name": name, "width": img.shape[1],
                               "height": img.shape[0], "license": 1})  # fmt: skip
                anns += [
                    {**a, "id": first_id + len(anns) + j, "image_id": image_id}
                    for j, a in enumerate(objs)
                ]
                bar.advance(task)
            coco = {"info": info, "licenses": _LICENSES, "images": images, "annotations": anns,
                    "categories": categories}  # fmt: skip
            _write_json(out_dir / "annotations" / f"instances_{split}.json", coco)
            with_objects = {a["image_id"] for a in anns}
            stats[split] = {"images": len(images), "empty_images": len(images) - len(with_objects),
                            "annotations": len(anns), **_size_counts([a["area"] for a in anns])}  # fmt: skip
    _write_json(out_dir / MARKER, {**marker, "complete": True, "stats": stats})
    return out_dir


def _is_current(out_dir: Path, params: dict) -> bool:
    marker = _read_marker(out_dir)
    return (marker is not None and marker.get("complete") is True
            and marker.get("version") == GENERATOR_VERSION and marker.get("params") == params
            and all((out_dir / "annotations" / f"instances_{s}.json").is_file() for s in SPLITS))  # fmt: skip


def is_synthetic_dataset(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds a complete synthetic dataset (any parameters)."""
    marker = _read_marker(Path(out_dir))
    return (marker is not None and marker.get("complete") is True
            and all((Path(out_dir) / "annotations" / f"instances_{s}.json").is_file() for s in SPLITS))  # fmt: skip


def ensure_synthetic(
    out_dir: str | Path, *, force: bool = False, progress: bool = False, **kwargs
) -> Path:
    """Makes the dataset at ``out_dir`` unless one with the same parameters is already there.

    Accepts ``make_synthetic_coco``'s keyword arguments. The dataset is written to a hidden sibling
    folder and renamed into place, so an interrupted run never leaves a half dataset under
    ``out_dir``; an existing dataset with other parameters is replaced, any other non-empty folder
    raises ValueError.
    """
    out_dir = Path(out_dir)
    params = _params(**{**_DEFAULTS, **kwargs})
    if not force and _is_current(out_dir, params):
        return out_dir
    if out_dir.is_dir() and any(out_dir.iterdir()) and _read_marker(out_dir) is None:
        raise ValueError(f"{out_dir} is a non-empty folder without {MARKER}: not a synthetic "
                         "dataset, so it is left alone; choose an empty or new folder")  # fmt: skip
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stale_name = re.compile(rf"\.{re.escape(out_dir.name)}\.(tmp|old)-(\d+)")
    for stale in out_dir.parent.glob(f".{out_dir.name}.*-*"):  # left by killed runs
        match = stale_name.fullmatch(stale.name)
        if match and not psutil.pid_exists(int(match[2])):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        make_synthetic_coco(tmp, progress=progress, **params)
        if not force and _is_current(out_dir, params):  # another process (a DDP rank) won the race
            shutil.rmtree(tmp)
            return out_dir
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m src.data.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="dataset folder (COCO layout)")
    for name, default in _DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--kind", choices=KINDS, default="shapes", help="what the objects are")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = vars(parser.parse_args(argv))
    out, force, quiet = args.pop("out"), args.pop("force"), args.pop("quiet")
    try:
        ensure_synthetic(out, force=force, progress=not quiet, **args)
    except ValueError as e:
        parser.error(str(e))
    stats = _read_marker(Path(out))["stats"]
    for split, s in stats.items():
        print(f"{out}/{split}: " + ", ".join(f"{k} {v}" for k, v in s.items()))


if __name__ == "__main__":
    main()
