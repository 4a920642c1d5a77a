import torch
from torchvision.io import ImageReadMode, decode_image

_MODES = {"RGB": ImageReadMode.RGB}


def _decode(data: torch.Tensor, mode: str = "RGB") -> torch.Tensor:
    return decode_image(data, mode=_MODES[mode])


decode_jpeg = decode_png = decode_webp = decode_gif = _decode
