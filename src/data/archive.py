"""Where a COCO split lives: the folder layout or COCO's own zip archives, read in place.

Folder layout::

    ROOT/{split}/*.jpg
    ROOT/annotations/instances_{split}.json

Archive layout, as COCO distributes it (never extracted)::

    ROOT/{split}.zip                      members {split}/*.jpg
    ROOT/annotations_trainval2017.zip     members annotations/instances_{split}.json

The two may be mixed (images in a folder, annotations in the zip). Zip members are read
with ``os.pread`` at offsets taken once from the central directory and kept in numpy
arrays, so DataLoader workers share them and need no ``ZipFile`` of their own.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANNOTATION_ZIP_GLOB = "annotations*.zip"
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # the 30-byte zip local file header
_LOCAL_HEADER_MAGIC = 0x04034B50


def expected_layout(root: Path, split: str) -> str:
    """The two layouts a split may have, spelled out for error messages."""
    return (
        f"expected either the folder layout\n"
        f"    {root}/{split}/*.jpg\n"
        f"    {root}/annotations/instances_{split}.json\n"
        f"or COCO's archive layout (read in place, never extracted)\n"
        f"    {root}/{split}.zip  (members {split}/*.jpg)\n"
        f"    {root}/annotations_trainval2017.zip  (member annotations/instances_{split}.json)"
    )


@dataclass(frozen=True)
class SplitSource:
    """Resolved locations of one split.

    Attributes:
        annotation_file: the json file, or the zip holding it as ``annotation_member``.
        annotation_member: member name inside ``annotation_file`` when that is a zip, else None.
        image_dir: folder of the images (folder layout), else None.
        image_zip: zip of the images (archive layout), else None.
    """

    split: str
    annotation_file: Path
    annotation_member: str | None
    image_dir: Path | None
    image_zip: Path | None

    def read_annotations(self) -> bytes:
        if self.annotation_member is None:
            return self.annotation_file.read_bytes()
        with zipfile.ZipFile(self.annotation_file) as zf:
            return zf.read(self.annotation_member)

    @property
    def annotation_name(self) -> str:
        """Human-readable location of the json, for messages."""
        if self.annotation_member is None:
            return str(self.annotation_file)
        return f"{self.annotation_file}:{self.annotation_member}"


def _annotation_zip_with(root: Path, member: str) -> Path | None:
    for path in sorted(root.glob(ANNOTATION_ZIP_GLOB)):
        try:
            with zipfile.ZipFile(path) as zf:
                if member in zf.NameToInfo:
                    return path
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path} is not a readable zip archive: {error}") from error
    return None


def find_annotations(root: str | Path, split: str) -> SplitSource | None:
    """The split's annotation json (folder or zip) without checking its images; None if absent."""
    root = Path(root)
    json_path = root / "annotations" / f"instances_{split}.json"
    if json_path.is_file():
        return SplitSource(split, json_path, None, None, None)
    member = f"annotations/instances_{split}.json"
    archive = _annotation_zip_with(root, member) if root.is_dir() else None
    if archive is not None:
        return SplitSource(split, archive, member, None, None)
    return None


def resolve_split(root: str | Path, split: str) -> SplitSource:
    """Locate a split's images and annotations, or raise naming what is missing.

    Raises:
        FileNotFoundError: the root, the image folder/zip or the annotation json is missing;
            the message names the missing path and both accepted layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"COCO root {root} does not exist or is not a folder; " + expected_layout(root, split)
        )
    image_dir, image_zip = root / split, root / f"{split}.zip"
    if not image_dir.is_dir() and not image_zip.is_file():
        raise FileNotFoundError(
            f"COCO split {split!r}: neither the image folder {image_dir}/ nor the archive "
            f"{image_zip} exists; " + expected_layout(root, split)
        )
    source = find_annotations(root, split)
    if source is None:
        raise FileNotFoundError(
            f"COCO split {split!r}: annotation file {root / 'annotations' / f'instances_{split}.json'} "
            f"does not exist, and no {root}/{ANNOTATION_ZIP_GLOB} holds "
            f"annotations/instances_{split}.json; " + expected_layout(root, split)
        )
    if image_dir.is_dir():
        return SplitSource(split, source.annotation_file, source.annotation_member, image_dir, None)
    return SplitSource(split, source.annotation_file, source.annotation_member, None, image_zip)


def default_cache_dir(near: Path) -> Path:
    """``near`` when it is writable (and not marked read-only), else ``~/.cache/fpn``.

    ``FPN_CACHE_DIR`` overrides both. The mode bits are checked as well as ``os.access``
    because root may write anywhere, yet a folder marked read-only should stay untouched.
    """
    env = os.environ.get("FPN_CACHE_DIR")
    if env:
        return Path(env)
    try:
        writable = os.access(near, os.W_OK) and bool(
            stat.S_IMODE(near.stat().st_mode) & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        )
    except OSError:
        writable = False
    return near if writable else Path.home() / ".cache" / "fpn"


def zip_member_table(zip_path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Offsets of the named members: ``header_offset``, ``compress_size`` int64 and
    ``method`` int16 per name, ``-1`` in ``header_offset`` where the member is absent."""
    offsets = np.full(len(names), -1, dtype=np.int64)
    sizes = np.zeros(len(names), dtype=np.int64)
    methods = np.zeros(len(names), dtype=np.int16)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.NameToInfo
            for i, name in enumerate(names):
                info = infos.get(name)
                if info is None:
                    continue
                if info.flag_bits & 0x1:
                    raise ValueError(f"{zip_path}: member {name} is encrypted")
                offsets[i], sizes[i], methods[i] = (
                    info.header_offset,
                    info.compress_size,
                    info.compress_type,
                )
    except zipfile.BadZipFile as error:
        raise ValueError(f"{zip_path} is not a readable zip archive: {error}") from error
    return {"header_offset": offsets, "compress_size": sizes, "method": methods}


class ZipReader:
    """Reads members of one zip by offset; one file descriptor per process (fork safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # a forked worker must not share the parent's descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        assert self._fd is not None
        return self._fd

    def read(self, header_offset: int, compress_size: int, method: int) -> bytes:
        fd = self._descriptor()
        header = os.pread(fd, _LOCAL_HEADER.size, header_offset)
        if len(header) < _LOCAL_HEADER.size:
            raise ValueError(f"{self.path}: truncated archive at offset {header_offset}")
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != _LOCAL_HEADER_MAGIC:
            raise ValueError(f"{self.path}: no zip member header at offset {header_offset}")
        start = header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        data = os.pread(fd, compress_size, start)
        if len(data) < compress_size:
            raise ValueError(f"{self.path}: member at offset {header_offset} is truncated")
        if method == zipfile.ZIP_STORED:
            return data
        if method == zipfile.ZIP_DEFLATED:
            try:
                return zlib.decompress(data, -15)
            except zlib.error as error:
                raise ValueError(
                    f"{self.path}: corrupt member at offset {header_offset}: {error}"
                ) from None
        raise ValueError(
            f"{self.path}: member at offset {header_offset} uses compression method {method}; "
            "only stored (0) and deflated (8) members are supported"
        )
