"""Precomputed region proposals in a file: written by ``src.proposals``, read for Table 2.

The file is a NumPy ``.npz`` archive read with ``allow_pickle=False`` (a file the user names is
data, never code) holding the fields of Detectron2's proposal files, ragged lists flattened:

- ``ids``: int64 [N], COCO image ids.
- ``counts``: int64 [N], proposals per image; image i's rows are
  ``offsets[i]:offsets[i + 1]`` with ``offsets = concatenate([[0], cumsum(counts)])``.
- ``boxes``: float32 [sum(counts), 4], ``x1, y1, x2, y2`` in original image pixels
  (Detectron2's ``BoxMode.XYXY_ABS``), each image's best first.
- ``objectness_logits``: float32 [sum(counts)], the RPN's logits, descending per image.
- ``bbox_mode``: the string ``"XYXY_ABS"``.
- ``split``: the split the proposals were computed on (``"train2017"``); ``source``: what made
  them (the checkpoint); ``format_version``: 1.

Two files hold the same proposals when their ``ProposalSet.content_digest()`` agree: the file's
own sha256 also covers ``source``, the checkpoint's path, so the same RPN's proposals written
from ``last.ckpt`` and from ``epoch_006.ckpt`` (or from another folder) differ byte for byte.

``ProposalSet.as_detectron2()`` gives the dict Detectron2's ``load_proposals_into_dataset``
reads (lists per image, ``bbox_mode`` 0 = ``BoxMode.XYXY_ABS``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors

FORMAT_VERSION = 1
BBOX_MODE = "XYXY_ABS"
_FIELDS = ("ids", "counts", "boxes", "objectness_logits", "bbox_mode", "split", "format_version")


class ProposalFileError(ValueError):
    """A proposal file that cannot be read, or that does not match the dataset it is used on."""


def objectness_logits(probabilities: Tensor) -> Tensor:
    """torchvision's RPN returns sigmoid probabilities; the file stores logits like Detectron2."""
    p = probabilities.double().clamp(1e-12, 1 - 1e-12)
    return torch.log(p / (1 - p)).float()


def save_proposals(
    path: str | os.PathLike,
    image_ids: Sequence[int],
    boxes: Sequence[Tensor],
    logits: Sequence[Tensor],
    *,
    split: str,
    source: str = "",
) -> Path:
    """Write one split's proposals (see the module docstring); atomic (temp file, rename).

    Args:
        image_ids: N image ids, each once.
        boxes: N tensors [P_i,4] xyxy in original image pixels, best first.
        logits: N tensors [P_i] objectness logits.
    """
    if not len(image_ids) == len(boxes) == len(logits):
        raise ValueError(f"{len(image_ids)} ids, {len(boxes)} box sets, {len(logits)} logit sets")
    if len(set(int(i) for i in image_ids)) != len(image_ids):
        raise ValueError("image ids repeat: one entry per image")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    flat_boxes = (
        torch.cat([b.detach().float().cpu().reshape(-1, 4) for b in boxes]).numpy()
        if len(boxes)
        else np.zeros((0, 4), np.float32)
    )
    flat_logits = (
        torch.cat([s.detach().float().cpu().reshape(-1) for s in logits]).numpy()
        if len(logits)
        else np.zeros((0,), np.float32)
    )
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "wb") as f:
        np.savez(
            f,
            ids=np.asarray(image_ids, dtype=np.int64),
            counts=counts,
            boxes=flat_boxes.astype(np.float32),
            objectness_logits=flat_logits.astype(np.float32),
            bbox_mode=np.array(BBOX_MODE),
            split=np.array(split),
            source=np.array(source),
            format_version=np.array(FORMAT_VERSION, dtype=np.int64),
        )
    os.replace(temp, path)
    return path


class ProposalSet:
    """One split's proposals, by image id.

    Attributes:
        path: the file; split, source: as written; ids: int64 [N].
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ProposalFileError(f"proposal file {str(self.path)!r} does not exist")
        try:
            with np.load(self.path, allow_pickle=False) as data:
                fields = {k: data[k] for k in data.files}
        except ValueError as error:  # also what a pickled object array raises
            raise ProposalFileError(
                f"proposal file {self.path} cannot be read without pickle: {error}"
            ) from None
        except (OSError, EOFError) as error:
            raise ProposalFileError(
                f"proposal file {self.path} is not an .npz archive: {error}"
            ) from None
        missing = [k for k in _FIELDS if k not in fields]
        if missing:
            raise ProposalFileError(
                f"proposal file {self.path} lacks {', '.join(missing)} "
                f"(written by python -m src.proposals? it has {', '.join(sorted(fields))})"
            )
        version = int(fields["format_version"])
        if version != FORMAT_VERSION:
            raise ProposalFileError(
                f"proposal file {self.path} has format_version {version}; this code reads "
                f"{FORMAT_VERSION}"
            )
        if str(fields["bbox_mode"]) != BBOX_MODE:
            raise ProposalFileError(
                f"proposal file {self.path}: bbox_mode {fields['bbox_mode']!s}, allowed {BBOX_MODE}"
            )
        self.ids = fields["ids"].astype(np.int64)
        counts = fields["counts"].astype(np.int64)
        self._boxes = fields["boxes"].astype(np.float32)
        self._logits = fields["objectness_logits"].astype(np.float32)
        if (
            counts.shape != self.ids.shape
            or self._boxes.ndim != 2
            or self._boxes.shape[1:] != (4,)
            or self._boxes.shape[0] != counts.sum()
            or self._logits.shape != (counts.sum(),)
        ):
            raise ProposalFileError(
                f"proposal file {self.path} is inconsistent: {len(self.ids)} ids, "
                f"{len(counts)} counts summing to {counts.sum()}, boxes {self._boxes.shape}, "
                f"logits {self._logits.shape}"
            )
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self._row = {int(i): n for n, i in enumerate(self.ids)}
        self.split = str(fields["split"])
        self.source = str(fields["source"]) if "source" in fields else ""

    def __len__(self) -> int:
        return len(self.ids)

    def content_digest(self) -> str:
        """sha256 (hex) of what a training run reads: ``split``, ``ids``, ``counts``, ``boxes``
        and ``objectness_logits``, each named with its length or shape and then its
        little-endian bytes. Not ``source``, which names the checkpoint's path, not the
        proposals."""
        digest = hashlib.sha256(f"split:{len(self.split)}:{self.split};".encode())
        fields = {"ids": (self.ids, "<i8"), "counts": (np.diff(self.offsets), "<i8"),
                  "boxes": (self._boxes, "<f4"), "objectness_logits": (self._logits, "<f4")}  # fmt: skip
        for name, (array, dtype) in fields.items():
            digest.update(f"{name}:{array.shape};".encode())
            digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
        return digest.hexdigest()

    def __contains__(self, image_id: int) -> bool:
        return int(image_id) in self._row

    def for_image(self, image_id: int) -> tuple[Tensor, Tensor]:
        """``(boxes [P,4] xyxy, logits [P])`` of one image, best first."""
        row = self._row.get(int(image_id))
        if row is None:
            raise ProposalFileError(f"proposal file {self.path} has no image id {image_id}")
        start, end = self.offsets[row], self.offsets[row + 1]
        return torch.from_numpy(self._boxes[start:end].copy()), torch.from_numpy(
            self._logits[start:end].copy()
        )

    def check_covers(self, image_ids: Sequence[int], split: str) -> None:
        """Refuse a file made for another split or missing any of ``image_ids`` (names them)."""
        if self.split != split:
            raise ProposalFileError(
                f"proposal file {self.path} holds split {self.split!r}, but it is used for split "
                f"{split!r}: write that split's with python -m src.proposals split={split}"
            )
        missing = [int(i) for i in image_ids if int(i) not in self._row]
        if missing:
            raise ProposalFileError(
                f"proposal file {self.path} (split {self.split!r}) has no proposals for "
                f"{len(missing)} of the {len(image_ids)} images: image ids "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}; was it written for "
                "another dataset root or another max_images/skip_images?"
            )

    def as_detectron2(self) -> dict[str, Any]:
        """Detectron2's proposal-file dict: ``ids``, ``boxes``, ``objectness_logits`` (lists
        per image) and ``bbox_mode`` (0, ``BoxMode.XYXY_ABS``)."""
        cuts = self.offsets[1:-1]
        return {
            "ids": self.ids.tolist(),
            "boxes": np.split(self._boxes, cuts),
            "objectness_logits": np.split(self._logits, cuts),
            "bbox_mode": 0,
        }


class WithProposals(torch.utils.data.Dataset):
    """A detection dataset whose targets also carry the image's fixed proposals.

    ``dataset`` must be built without transforms: the proposals join the target as
    ``proposals`` (a ``tv_tensors.BoundingBoxes`` [P,4] xyxy, best first) first, so that
    ``transforms`` (a flip) moves them together with the boxes. Everything else (``categories``,
    ``skipped_image_ids``...) is the wrapped dataset's.
    """

    def __init__(
        self,
        dataset: Any,
        proposals: ProposalSet,
        transforms: Callable | None = None,
    ) -> None:
        self.dataset = dataset
        self.proposals = proposals
        self.transforms = transforms
        proposals.check_covers(dataset.image_ids, dataset.split)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "proposals", "transforms"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i: int):
        sample = self.dataset[i]
        if sample is None:
            return None
        image, target = sample
        boxes, _ = self.proposals.for_image(target["image_id"])
        target["proposals"] = tv_tensors.BoundingBoxes(
            boxes, format="XYXY", canvas_size=tuple(image.shape[-2:])
        )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
