"""Image file bytes <-> uint8 [3,H,W] RGB tensors, through TorchCodec (torchvision 0.29
deprecates its own image codecs).

Pixels come out as stored in the file: TorchCodec turns images by their EXIF orientation
tag and offers no switch, so ``decode_rgb`` sets that tag to "as stored" (1) on a copy of
the bytes first. COCO's boxes and ``width``/``height`` refer to the stored pixels, which is
also what torchvision's ``decode_image`` returned by default.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor
from torchcodec.decoders import decode_gif, decode_jpeg, decode_png, decode_webp
from torchcodec.encoders import PngEncoder

_DECODERS = {"JPEG": decode_jpeg, "PNG": decode_png, "WebP": decode_webp, "GIF": decode_gif}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# "decode_rows, /__w/torchcodec/.../DecodeJpeg.cpp:287, " in front of the decoders' messages
_SOURCE_LOCATION = re.compile(r"^\w+, \S+:\d+, ")


def image_format(data: bytes | bytearray | memoryview) -> str | None:
    """``"JPEG"``, ``"PNG"``, ``"WebP"``, ``"GIF"`` by the leading bytes, else None."""
    head = bytes(data[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == _PNG_SIGNATURE:
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def decode_rgb(data: bytes | bytearray | Tensor, name: str) -> Tensor:
    """Encoded JPEG/PNG/WebP/GIF file bytes to a uint8 [3,H,W] RGB image.

    Grayscale, CMYK, palette, alpha (dropped) and 16-bit (scaled to 8) images are converted;
    an animated GIF/WebP gives its first frame. Pixels are as stored (EXIF orientation not
    applied).

    Args:
        data: the file's bytes, or a 1-D uint8 CPU tensor of them (neither is modified).
        name: how errors name the image, e.g. its path.

    Raises:
        ValueError: ``"{name} is empty"``, or ``"{name} cannot be decoded: {reason}"`` (not
            one of these formats, truncated or corrupt).
    """
    if isinstance(data, Tensor):
        if data.dtype != torch.uint8 or data.dim() != 1 or data.device.type != "cpu":
            raise TypeError(
                f"{name}: expected a 1-D uint8 CPU tensor of file bytes, "
                f"got {data.dtype} {list(data.shape)} on {data.device}"
            )
        view = memoryview(data.contiguous().numpy())
    else:
        # torch.frombuffer warns about read-only buffers such as bytes: copy those once
        view = memoryview(data if isinstance(data, bytearray) else bytearray(data))
    if not len(view):
        raise ValueError(f"{name} is empty")
    fmt = image_format(view)
    if fmt is None:
        raise ValueError(
            f"{name} cannot be decoded: not a JPEG, PNG, WebP or GIF file "
            f"(it starts with {bytes(view[:8])!r})"
        )
    if _orientation_tags(view, fmt):
        view = memoryview(bytearray(view))  # the caller's bytes stay as they are
        _clear_orientation(view, fmt)
    try:
        image = _DECODERS[fmt](torch.frombuffer(view, dtype=torch.uint8), mode="RGB")
    except (RuntimeError, ValueError) as error:
        reason = _SOURCE_LOCATION.sub("", (str(error).splitlines() or [""])[0])
        raise ValueError(f"{name} cannot be decoded: {reason or type(error).__name__}") from None
    return image[0] if image.dim() == 4 else image  # animated: the first frame


def write_png(image: Tensor, path: str | Path) -> None:
    """Writes a uint8 [3,H,W] RGB (or [1,H,W] gray) image to ``path`` as PNG.

    Raises:
        ValueError: ``image`` is not uint8 [3,H,W] / [1,H,W] with H, W > 0 (names ``path``).
        OSError: ``path`` cannot be written (from ``open``, naming it).
    """
    shape = tuple(image.shape)
    if image.dtype != torch.uint8 or len(shape) != 3 or shape[0] not in (1, 3) or 0 in shape:
        raise ValueError(
            f"{path}: write_png needs a uint8 [3,H,W] or [1,H,W] image with H, W > 0, "
            f"got {image.dtype} {list(image.shape)}"
        )
    encoded = PngEncoder(image.detach().cpu()).to_tensor()  # no half-written file on errors
    Path(path).write_bytes(encoded.numpy().tobytes())


# --- EXIF orientation --------------------------------------------------------------------


def _orientation_tags(data: memoryview, fmt: str) -> list[tuple[int, str]]:
    """``(offset, "<"|">")`` of each EXIF orientation value other than 1 in ``data``."""
    found: list[tuple[int, str]] = []
    for start, end in _exif_blocks(data, fmt):
        if bytes(data[start : start + 6]) == b"Exif\0\0":
            start += 6
        found += _tiff_orientation(data, start, end)
    return found


def _clear_orientation(data: memoryview, fmt: str) -> None:
    """Sets every EXIF orientation tag to 1 in place (and fixes PNG chunk checksums)."""
    for start, end in _exif_blocks(data, fmt):
        tiff = start + 6 if bytes(data[start : start + 6]) == b"Exif\0\0" else start
        for offset, order in _tiff_orientation(data, tiff, end):
            struct.pack_into(order + "H", data, offset, 1)
        if fmt == "PNG":  # the chunk's CRC covers its type (4 bytes before start) and data
            struct.pack_into(">I", data, end, zlib.crc32(data[start - 4 : end]))


def _exif_blocks(data: memoryview, fmt: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each EXIF block: JPEG APP1 "Exif", PNG eXIf, WebP EXIF chunks."""
    size, blocks = len(data), []
    if fmt == "JPEG":
        pos = 2
        while pos + 4 <= size and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
                pos += 2
                continue
            if marker in (0xDA, 0xD9):  # scan data or end: no more header segments
                break
            (length,) = struct.unpack_from(">H", data, pos + 2)
            end = min(pos + 2 + length, size)
            if marker == 0xE1 and bytes(data[pos + 4 : pos + 10]) == b"Exif\0\0":
                blocks.append((pos + 4, end))
            pos = pos + 2 + length
    elif fmt == "PNG":
        pos = 8
        while pos + 12 <= size:
            length, kind = struct.unpack_from(">I4s", data, pos)
            if kind == b"eXIf" and pos + 12 + length <= size:
                blocks.append((pos + 8, pos + 8 + length))
            pos += 12 + length
    elif fmt == "WebP":
        pos = 12
        while pos + 8 <= size:
            kind, length = struct.unpack_from("<4sI", data, pos)
            if kind == b"EXIF":
                blocks.append((pos + 8, min(pos + 8 + length, size)))
            pos += 8 + length + (length & 1)
    return blocks


def _tiff_orientation(data: memoryview, start: int, end: int) -> list[tuple[int, str]]:
    """Orientation values other than 1 in the first IFD of the TIFF structure at ``start``."""
    if end - start < 8:
        return []
    order = {b"II": "<", b"MM": ">"}.get(bytes(data[start : start + 2]))
    if order is None:
        return []
    (ifd,) = struct.unpack_from(order + "I", data, start + 4)
    ifd += start
    if ifd < start or ifd + 2 > end:
        return []
    (count,) = struct.unpack_from(order + "H", data, ifd)
    found = []
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, end - 11), 12):
        tag, _, _, value = struct.unpack_from(order + "HHIH", data, entry)
        if tag == 0x0112 and value != 1:
            found.append((entry + 8, order))
    return found
