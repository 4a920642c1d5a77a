"""A compact COCO index: per-image records in a few numpy buffers, cached on disk.

Python dicts and lists of the json would be touched (refcounts) by every DataLoader
worker and so copied page by page into each of them; flat numpy arrays are never
written after the fork and stay shared (the Detectron2 approach). The index is built
once per annotation file (``src.data.coco_json``) and kept as an ``.npz`` keyed on the file's path,
size and mtime, so later runs start in about a second.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from src.data.archive import SplitSource, default_cache_dir
from src.data.coco_json import read_columns

INDEX_VERSION = 1  # bump whenever the arrays or their meaning change: old caches are rebuilt

# COCO's object sizes by box area, as COCOeval draws them: small < 32², medium < 96², large.
OBJECT_SIZES = ("small", "medium", "large")


def object_sizes(areas: np.ndarray) -> np.ndarray:
    """Index into OBJECT_SIZES (0, 1, 2) of each area in square pixels; same shape."""
    return np.searchsorted(np.array([32.0**2, 96.0**2]), np.asarray(areas, np.float64), "right")


@dataclass
class CocoIndex:
    """Every image and box of one instances json; images sorted by id.

    Per image (``N``): ``image_ids`` int64, ``widths``/``heights`` int32, file names as one
    utf-8 buffer ``name_bytes`` uint8 cut at ``name_offsets`` int64 [N+1], boxes of image
    ``i`` at rows ``box_offsets[i]:box_offsets[i+1]`` (int64 [N+1]).
    Per box (``M``, in the json's order within an image, degenerate boxes already dropped):
    ``boxes`` float32 [M,4] XYXY clipped to the image, ``labels`` int64 1..K, ``iscrowd``
    bool, ``areas`` float32 (the annotation's ``area``), ``ann_ids`` int64.
    Per category (``K``, sorted by id): ``category_ids`` int64, ``category_names`` str.
    ``dropped_ann_ids`` int64: the annotations dropped as narrower or lower than 1 px after
    clipping; ``num_clipped``: boxes that reached outside their image.
    """

    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    name_bytes: np.ndarray
    name_offsets: np.ndarray
    box_offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray
    ann_ids: np.ndarray
    category_ids: np.ndarray
    category_names: np.ndarray
    dropped_ann_ids: np.ndarray
    num_clipped: np.ndarray  # 0-d int64

    def __len__(self) -> int:
        return len(self.image_ids)

    def file_name(self, i: int) -> str:
        start, end = self.name_offsets[i], self.name_offsets[i + 1]
        return self.name_bytes[start:end].tobytes().decode("utf-8")

    def file_names(self) -> list[str]:
        return [self.file_name(i) for i in range(len(self))]

    def non_crowd_counts(self) -> np.ndarray:
        """int64 [N]: boxes per image that training sees (not crowd, not degenerate)."""
        image_of_box = np.repeat(np.arange(len(self)), np.diff(self.box_offsets))
        return np.bincount(image_of_box[~self.iscrowd], minlength=len(self))

    def save(self, path: Path) -> None:
        """Write atomically, so concurrent builders (DDP ranks) never see half a file."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, version=np.int64(INDEX_VERSION), **_arrays(self))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> CocoIndex:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != INDEX_VERSION:
                raise ValueError(f"{path}: index version {int(data['version'])}")
            return cls(**{f.name: data[f.name] for f in fields(cls)})


def _arrays(index: CocoIndex) -> dict[str, np.ndarray]:
    return {f.name: getattr(index, f.name) for f in fields(index)}


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``values`` in ``sorted_ids`` and a mask of those actually found."""
    pos = np.searchsorted(sorted_ids, values).clip(0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[pos] == values if len(sorted_ids) else np.zeros(len(values), bool)
    return pos, found


def build_index(data: bytes, name: str) -> CocoIndex:
    """Parse an instances json (bytes) into a CocoIndex; ``name`` is used in messages.

    Raises:
        ValueError: invalid json, a missing top-level key or field, a duplicate image or
            category id, an annotation whose image or category id is unknown (named with
            the annotation id).
    """
    cols = read_columns(data, name)
    cat_order = np.argsort(cols.cat_ids, kind="stable")
    cat_ids = cols.cat_ids[cat_order]
    if len(np.unique(cat_ids)) != len(cat_ids):
        dup = cat_ids[np.flatnonzero(np.diff(cat_ids) == 0)[0]]
        raise ValueError(f"{name}: category id {dup} appears twice in 'categories'")
    cat_names = np.array([cols.cat_names[i] for i in cat_order], dtype=str)

    order = np.argsort(cols.image_ids, kind="stable")
    ids, widths, heights = cols.image_ids[order], cols.widths[order], cols.heights[order]
    if len(np.unique(ids)) != len(ids):
        dup = ids[np.flatnonzero(np.diff(ids) == 0)[0]]
        raise ValueError(f"{name}: image id {dup} appears twice in 'images'")
    encoded = [cols.file_names[i].encode("utf-8") for i in order]
    name_offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=name_offsets[1:])
    name_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    ann_ids, image_of, cat_of = cols.ann_ids, cols.ann_image_ids, cols.ann_category_ids
    iscrowd, xywh, areas = cols.iscrowd, cols.xywh, cols.areas
    pos, found = _lookup(ids, image_of)
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise ValueError(
            f"{name}: annotation {ann_ids[i]} refers to image id {image_of[i]}, "
            "which is not in 'images'"
        )
    cat_pos, found = _lookup(cat_ids, cat_of)
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise ValueError(
            f"{name}: annotation {ann_ids[i]} has category_id {cat_of[i]}, which is not in "
            f"'categories' (ids {cat_ids.tolist()})"
        )

    w, h = widths[pos].astype(np.float64), heights[pos].astype(np.float64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    clipped = np.stack(
        [
            xyxy[:, 0].clip(0, w),
            xyxy[:, 1].clip(0, h),
            xyxy[:, 2].clip(0, w),
            xyxy[:, 3].clip(0, h),
        ],
        axis=1,
    )
    keep = (clipped[:, 2] - clipped[:, 0] >= 1) & (clipped[:, 3] - clipped[:, 1] >= 1)
    num_clipped = int((keep & (clipped != xyxy).any(axis=1)).sum())

    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(pos[kept], kind="stable")]
    box_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(pos[kept], minlength=len(ids)), out=box_offsets[1:])
    return CocoIndex(
        image_ids=ids,
        widths=widths.astype(np.int32),
        heights=heights.astype(np.int32),
        name_bytes=name_bytes,
        name_offsets=name_offsets,
        box_offsets=box_offsets,
        boxes=clipped[kept].astype(np.float32),
        labels=cat_pos[kept] + 1,
        iscrowd=iscrowd[kept],
        areas=areas[kept].astype(np.float32),
        ann_ids=ann_ids[kept],
        category_ids=cat_ids,
        category_names=cat_names,
        dropped_ann_ids=ann_ids[~keep],
        num_clipped=np.int64(num_clipped),
    )


def cache_path(source: SplitSource, cache_dir: str | Path | None, kind: str, *extra: Any) -> Path:
    """Cache file for ``source`` keyed on its annotation file's path, size and mtime."""
    st = source.annotation_file.stat()
    key = [INDEX_VERSION, kind, str(source.annotation_file.resolve()), source.annotation_member,
           st.st_size, st.st_mtime_ns, *extra]  # fmt: skip
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir else default_cache_dir(source.annotation_file.parent)
    return folder / f"coco_{kind}_{source.split}_{digest}.npz"


def load_index(source: SplitSource, cache_dir: str | Path | None = None) -> CocoIndex:
    """The split's index from the cache, or built from its json (and cached, if possible)."""
    path = cache_path(source, cache_dir, "index")
    if path.is_file():
        try:
            return CocoIndex.load(path)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            pass  # unreadable or outdated: rebuild below and overwrite it
    index = build_index(source.read_annotations(), source.annotation_name)
    _try_save(path, index.save)
    return index


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Small helper for other per-split tables (e.g. zip member offsets)."""
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            pass
    arrays = build()

    def save(p: Path) -> None:
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, p)

    _try_save(path, save)
    return arrays


def _try_save(path: Path, save: Callable[[Path], None]) -> None:
    # A cache that cannot be written only costs time on the next start, never the run.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(path)
    except OSError as error:
        warnings.warn(
            f"could not write the cache file {path} ({error}); pass cache_dir", stacklevel=3
        )
