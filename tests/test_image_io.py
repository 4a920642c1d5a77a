"""src.data.image_io: TorchCodec decoding to uint8 [3,H,W] RGB as stored, PNG writing, and
no torchvision.io left in src/."""

from __future__ import annotations

import ast
import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.image_io import decode_rgb, write_png

SRC = Path(__file__).resolve().parents[1] / "src"
W, H = 40, 30


def pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def hwc(image: torch.Tensor) -> np.ndarray:
    assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3
    return image.permute(1, 2, 0).numpy()


def encoded(array: np.ndarray, fmt: str, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **save)
    return out.getvalue()


def test_real_coco_jpegs_match_pil(coco_tiny: Path) -> None:
    files = sorted((coco_tiny / "val2017").glob("*.jpg"))[:5]
    assert files, f"no JPEGs in {coco_tiny / 'val2017'}"
    for path in files:
        data = path.read_bytes()
        image = decode_rgb(data, str(path))
        reference = pil_rgb(data)
        assert hwc(image).shape == reference.shape, path
        # both use libjpeg(-turbo); only IDCT/upsampling rounding may differ
        assert np.abs(hwc(image).astype(np.int16) - reference).mean() < 1.0, path


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_grayscale_gives_three_equal_channels(encode_image, fmt: str) -> None:
    data = encode_image(W, H, seed=1, mode="L", fmt=fmt)
    image = decode_rgb(data, "gray")
    assert image.shape == (3, H, W)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert np.abs(hwc(image).astype(np.int16) - pil_rgb(data)).mean() < 1.0


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "1"])
def test_png_modes_come_out_rgb_exactly(encode_image, mode: str) -> None:
    data = encode_image(W, H, seed=2, mode=mode, fmt="PNG")
    assert np.array_equal(hwc(decode_rgb(data, "x.png")), pil_rgb(data))  # alpha dropped


def test_cmyk_jpeg_and_webp_and_bytes_or_tensor_input(encode_image) -> None:
    cmyk = encode_image(W, H, seed=3, mode="CMYK")
    assert np.abs(hwc(decode_rgb(cmyk, "c.jpg")).astype(np.int16) - pil_rgb(cmyk)).mean() < 2.0
    webp = encode_image(W, H, seed=3, fmt="WEBP", mode="RGB")
    from_tensor = decode_rgb(torch.frombuffer(bytearray(webp), dtype=torch.uint8), "w.webp")
    assert torch.equal(from_tensor, decode_rgb(webp, "w.webp"))
    assert np.abs(hwc(from_tensor).astype(np.int16) - pil_rgb(webp)).mean() < 2.0


def test_16_bit_png_is_scaled_to_uint8() -> None:
    rng = np.random.default_rng(4)
    gray16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    image = decode_rgb(encoded(gray16, "PNG"), "deep.png")
    assert np.array_equal(hwc(image)[..., 0], np.round(gray16 / 257).astype(np.uint8))


def test_animated_gif_gives_its_first_frame() -> None:
    rng = np.random.default_rng(5)
    frames = [Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for _ in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    image = decode_rgb(out.getvalue(), "anim.gif")
    assert image.shape == (3, H, W)
    assert np.array_equal(hwc(image), pil_rgb(out.getvalue()))


def exif_orientation(value: int, order: bytes) -> bytes:
    """An EXIF block with a Make tag and an Orientation tag, in either byte order."""
    e = "<" if order == b"II" else ">"
    entries = struct.pack(e + "HHI", 0x010F, 2, 4) + b"cam\0"
    entries += struct.pack(e + "HHIH", 0x0112, 3, 1, value) + b"\0\0"
    return b"Exif\0\0" + order + struct.pack(e + "HIH", 42, 8, 2) + entries + b"\0\0\0\0"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize(("orientation", "order"), [(3, b"II"), (6, b"MM"), (8, b"II")])
def test_exif_orientation_is_not_applied(fmt: str, orientation: int, order: bytes) -> None:
    """COCO's boxes are in stored pixels: TorchCodec would turn the image, we must not."""
    pixels = np.random.default_rng(6).integers(0, 256, (H, W, 3), dtype=np.uint8)
    data = encoded(pixels, fmt, exif=exif_orientation(orientation, order), quality=95)
    before = bytes(data)
    image = decode_rgb(data, "turned")
    assert image.shape == (3, H, W)
    stored = pixels if fmt == "PNG" else np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(hwc(image).astype(np.int16) - stored).mean() < 2.0  # not rotated or flipped
    assert data == before  # the caller's bytes are not touched
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    assert torch.equal(decode_rgb(tensor, "turned"), image)
    assert bytes(tensor.numpy()) == before


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda jpg: jpg[: len(jpg) // 2], "incomplete or truncated"),
        (lambda jpg: jpg[:20] + bytes(200), "incomplete or truncated"),
        (lambda jpg: b"\x89PNG\r\n\x1a\n" + jpg[8:], "decode_png failed"),
        (lambda jpg: b"just some text, not an image", "not a JPEG, PNG, WebP or GIF file"),
        (lambda jpg: b"BM" + jpg[2:], "not a JPEG, PNG, WebP or GIF file"),
    ],
)
def test_corrupt_bytes_raise_naming_the_file(encode_image, make, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^/data/x/broken\.jpg cannot be decoded: ") as err:
        decode_rgb(make(encode_image(W, H)), "/data/x/broken.jpg")
    assert reason in str(err.value)
    assert ".cpp:" not in str(err.value)  # the decoder's source location is left out


def test_empty_bytes_and_wrong_tensor() -> None:
    with pytest.raises(ValueError, match=r"^empty\.jpg is empty$"):
        decode_rgb(b"", "empty.jpg")
    with pytest.raises(TypeError, match=r"f\.jpg: expected a 1-D uint8 CPU tensor"):
        decode_rgb(torch.zeros(4, dtype=torch.int32), "f.jpg")


def test_no_warnings_when_decoding_and_writing(encode_image, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation, no non-writable-buffer warning
        image = decode_rgb(encode_image(W, H), "a.jpg")  # bytes: read-only buffer
        decode_rgb(bytearray(encode_image(W, H, fmt="PNG")), "a.png")
        write_png(image, tmp_path / "a.png")


def test_write_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    image = torch.from_numpy(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).permute(2, 0, 1)
    write_png(image, tmp_path / "rgb.png")  # a non-contiguous view, as drawn panels can be
    with Image.open(tmp_path / "rgb.png") as png:
        assert png.mode == "RGB" and np.array_equal(np.asarray(png), hwc(image))
    write_png(image[:1], str(tmp_path / "gray.png"))
    with Image.open(tmp_path / "gray.png") as png:
        assert png.mode == "L" and np.array_equal(np.asarray(png), image[0].numpy())
    assert torch.equal(decode_rgb((tmp_path / "rgb.png").read_bytes(), "rgb.png"), image)


def test_write_png_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"bad\.png: write_png needs a uint8 \[3,H,W\]"):
        write_png(torch.zeros(3, H, W), tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"bad\.png"):
        write_png(torch.zeros(2, H, W, dtype=torch.uint8), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(FileNotFoundError, match=r"nowhere/x\.png"):
        write_png(torch.zeros(3, H, W, dtype=torch.uint8), tmp_path / "nowhere" / "x.png")


def test_src_has_no_torchvision_io_and_no_filter_for_its_deprecation() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(n == "torchvision.io" or n.startswith("torchvision.io.") for n in names):
                offenders.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
        if "torchvision.io" in text or "The image decoding" in text:
            offenders.append(f"{path.relative_to(SRC.parent)} mentions torchvision.io")
    assert not offenders, f"torchvision.io (deprecated image codecs) still in: {offenders}"
    pyproject = (SRC.parent / "pyproject.toml").read_text()
    filters = pyproject.split("filterwarnings", 1)[-1].split("]", 1)[0]
    assert "image decoding" not in filters.lower() and "torchcodec" not in filters.lower()
