"""Decode every study image with the project's decode_rgb (torchcodec) and with torchvision.io.decode_jpeg; count the images whose pixels differ."""
import warnings, hashlib, sys
warnings.filterwarnings("ignore")
from pathlib import Path
import torch, torchvision
from torchvision.io import decode_jpeg, ImageReadMode
from src.data.image_io import decode_rgb
n=bad=0
for root in ["data/synthetic","data/glyphs"]:
    for p in sorted(Path(root).glob("*2017/*.jpg")):
        b=p.read_bytes()
        a=decode_rgb(b,str(p))
        t=decode_jpeg(torch.frombuffer(bytearray(b),dtype=torch.uint8),mode=ImageReadMode.RGB)
        n+=1
        if not torch.equal(a,t): bad+=1
print(torchvision.__version__, n, "differ", bad)
