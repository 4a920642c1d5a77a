import torch
from torchvision.io import encode_png


class PngEncoder:
    def __init__(self, image: torch.Tensor):
        self.image = image

    def to_tensor(self) -> torch.Tensor:
        return encode_png(self.image)
