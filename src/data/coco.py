"""COCO detection dataset over a compact numpy index, from folders or COCO's zip archives."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors

from src.data.archive import ZipReader, resolve_split, zip_member_table
from src.data.coco_index import CocoIndex, cache_path, cached_arrays, load_index
from src.data.image_io import decode_rgb

BAD_IMAGE_MODES = ("raise", "skip")


class CocoDetection(torch.utils.data.Dataset):
    """One COCO split: ``(image, target)`` samples in image-id order.

    Args:
        root: folder with ``{split}/`` + ``annotations/instances_{split}.json`` or with
            ``{split}.zip`` + ``annotations_trainval2017.zip`` (see ``src.data.archive``).
        split: e.g. ``"train2017"``.
        train: training targets (no crowd boxes) if True; evaluation targets (crowd boxes
            kept, plus ``iscrowd`` and ``area``) if False.
        transforms: ``f(image, target) -> (image, target)`` on tv_tensors, or None.
        filter_empty: leave out images without a non-crowd box; None means ``train``.
        on_bad_image: ``"raise"`` an error naming file and image id for a missing or
            corrupt image, or ``"skip"`` it (the sample is None; see ``num_skipped``).
        max_images: keep only the first N images by image id (after filtering).
        skip_images: leave out the first N images by image id (after filtering) before
            ``max_images`` applies: ``skip_images=4, max_images=4`` is the second set of four.
        cache_dir: where the index cache goes; None: next to the annotations when
            writable, else ``~/.cache/fpn`` (``FPN_CACHE_DIR`` overrides).
        index: an already loaded index of this split (saves a second load).

    Samples: image ``tv_tensors.Image`` uint8 [3,H,W] RGB; target ``boxes``
    ``tv_tensors.BoundingBoxes`` XYXY float32 [N,4], ``labels`` int64 [N] in 1..K,
    ``image_id`` int, and when ``train=False`` ``iscrowd`` int64 [N], ``area`` float32 [N].
    Label ``l`` is category ``category_ids[l - 1]`` named ``category_names[l - 1]``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        train: bool,
        transforms=None,
        filter_empty: bool | None = None,
        on_bad_image: str = "raise",
        max_images: int | None = None,
        skip_images: int = 0,
        cache_dir: str | Path | None = None,
        index: CocoIndex | None = None,
    ) -> None:
        if on_bad_image not in BAD_IMAGE_MODES:
            raise ValueError(f"on_bad_image={on_bad_image!r}; allowed: {BAD_IMAGE_MODES}")
        if max_images is not None and (isinstance(max_images, bool) or int(max_images) < 1):
            raise ValueError(f"max_images={max_images!r}; allowed: a positive integer or None")
        self.split, self.train, self.transforms = split, bool(train), transforms
        self.on_bad_image = on_bad_image
        self.source = resolve_split(root, split)
        self.index = index if index is not None else load_index(self.source, cache_dir)
        self._warn_dropped()

        positions = np.arange(len(self.index))
        if train if filter_empty is None else filter_empty:
            positions = positions[self.index.non_crowd_counts() > 0]
        if isinstance(skip_images, bool) or int(skip_images) < 0:
            raise ValueError(f"skip_images={skip_images!r}; allowed: an integer >= 0")
        positions = positions[int(skip_images) :]
        if max_images is not None:
            positions = positions[: int(max_images)]
        self._positions = positions
        self.category_ids: list[int] = self.index.category_ids.tolist()
        self.category_names: list[str] = self.index.category_names.tolist()
        self.image_ids: np.ndarray = self.index.image_ids[positions]
        self.aspect_ratios: np.ndarray = (
            self.index.widths[positions] / self.index.heights[positions]
        ).astype(np.float64)

        self._zip: ZipReader | None = None
        self._members: dict[str, np.ndarray] | None = None
        if self.source.image_zip is not None:
            zpath = self.source.image_zip
            st = zpath.stat()
            table = cache_path(
                self.source, cache_dir, "zip", str(zpath.resolve()), st.st_size, st.st_mtime_ns
            )
            names = [f"{split}/{n}" for n in self.index.file_names()]
            self._members = cached_arrays(table, lambda: zip_member_table(zpath, names))
            self._zip = ZipReader(zpath)
        # one byte per image in shared memory: workers mark what they skipped, the main
        # process counts it (each image counted once, however many epochs saw it)
        self._skipped = torch.zeros(len(positions), dtype=torch.uint8)
        if on_bad_image == "skip":
            self._skipped.share_memory_()

    def _warn_dropped(self) -> None:
        dropped = self.index.dropped_ann_ids
        if len(dropped):
            more = ", ..." if len(dropped) > 10 else ""
            warnings.warn(
                f"{self.source.annotation_name}: dropped {len(dropped)} boxes narrower or lower "
                f"than 1 px after clipping to the image (annotation ids "
                f"{', '.join(map(str, dropped[:10].tolist()))}{more}); "
                f"{int(self.index.num_clipped)} other boxes were clipped to their image",
                stacklevel=3,
            )

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return {c: i + 1 for i, c in enumerate(self.category_ids)}

    @property
    def num_skipped(self) -> int:
        """Distinct images skipped as unreadable so far, by this process and its workers."""
        return int(self._skipped.sum())

    @property
    def skipped_image_ids(self) -> list[int]:
        return self.image_ids[self._skipped.numpy().astype(bool)].tolist()

    def __len__(self) -> int:
        return len(self._positions)

    def image_info(self, i: int) -> dict:
        """``{"id", "file_name", "width", "height"}`` of sample ``i``, read from the index."""
        pos = self._positions[i]
        return {
            "id": int(self.index.image_ids[pos]),
            "file_name": self.index.file_name(pos),
            "width": int(self.index.widths[pos]),
            "height": int(self.index.heights[pos]),
        }

    def target(self, i: int) -> dict:
        """Sample ``i``'s target without decoding its image (keys as in the class doc)."""
        ix, pos = self.index, self._positions[i]
        start, end = ix.box_offsets[pos], ix.box_offsets[pos + 1]
        keep = slice(None) if not self.train else ~ix.iscrowd[start:end]
        # copies: a transform working in place must never reach the shared index
        boxes = np.array(ix.boxes[start:end][keep], dtype=np.float32, copy=True)
        canvas = (int(ix.heights[pos]), int(ix.widths[pos]))
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes), format="XYXY", canvas_size=canvas
            ),
            "labels": torch.from_numpy(np.array(ix.labels[start:end][keep], dtype=np.int64)),
            "image_id": int(ix.image_ids[pos]),
        }
        if not self.train:
            target["iscrowd"] = torch.from_numpy(ix.iscrowd[start:end].astype(np.int64))
            target["area"] = torch.from_numpy(np.array(ix.areas[start:end], dtype=np.float32))
        return target

    def _where(self, pos: int) -> str:
        name = self.index.file_name(pos)
        if self._zip is not None:
            return f"{self._zip.path}:{self.split}/{name}"
        assert self.source.image_dir is not None
        return str(self.source.image_dir / name)

    def _read(self, pos: int) -> bytearray:
        image_id = int(self.index.image_ids[pos])
        if self._zip is not None:
            assert self._members is not None
            offset = int(self._members["header_offset"][pos])
            if offset < 0:
                raise FileNotFoundError(
                    f"image {self._where(pos)} (image id {image_id}) is not in the archive"
                )
            size, method = self._members["compress_size"][pos], self._members["method"][pos]
            return bytearray(self._zip.read(offset, int(size), int(method)))
        path = self._where(pos)
        try:
            with open(path, "rb") as f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                f.readinto(data)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path} (image id {image_id}) is missing") from None
        return data

    def load_image(self, i: int) -> tv_tensors.Image:
        """Sample ``i``'s image, uint8 [3,H,W] RGB.

        Raises:
            FileNotFoundError: the file (or zip member) is missing; names it and the image id.
            ValueError: the file is empty, not a complete image, or not the json's size.
        """
        pos = self._positions[i]
        image_id = int(self.index.image_ids[pos])
        # ValueError "image file ... (image id ...) is empty" / "... cannot be decoded: why"
        image = decode_rgb(self._read(pos), f"image file {self._where(pos)} (image id {image_id})")
        expected = (int(self.index.heights[pos]), int(self.index.widths[pos]))
        if tuple(image.shape[1:]) != expected:
            raise ValueError(
                f"image file {self._where(pos)} (image id {image_id}) is {image.shape[2]}x"
                f"{image.shape[1]} pixels but the annotations say {expected[1]}x{expected[0]}"
            )
        return tv_tensors.Image(image)

    def __getitem__(self, i: int) -> tuple[tv_tensors.Image, dict] | None:
        try:
            image = self.load_image(i)
        except (OSError, ValueError) as error:
            if self.on_bad_image == "raise":
                raise
            self._skipped[i] = 1
            warnings.warn(f"skipped an unreadable image: {error}", stacklevel=2)
            return None
        target = self.target(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate_detection(batch: list) -> tuple[list[Tensor], list[dict]]:
    """``[(image, target) | None, ...]`` -> ``(images, targets)``; None (skipped) dropped."""
    kept = [sample for sample in batch if sample is not None]
    return [image for image, _ in kept], [target for _, target in kept]
