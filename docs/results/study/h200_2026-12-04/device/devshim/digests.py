"""Print each dataset's file digest (the study doc's) and a digest of every image's decoded pixels."""
import hashlib
import sys
from pathlib import Path

from src.data.image_io import decode_rgb

for root in map(Path, sys.argv[1:]):
    files = sorted(p for d in ("train2017", "val2017", "annotations") for p in (root / d).rglob("*") if p.is_file() and p.suffix.startswith(".j"))
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n" for p in files)
    pix = hashlib.sha256()
    n = 0
    for p in files:
        if p.suffix == ".jpg":
            pix.update(decode_rgb(p.read_bytes(), str(p)).numpy().tobytes())
            n += 1
    print(f"{root}: files {hashlib.sha256(lines.encode()).hexdigest()[:16]} pixels({n}) {pix.hexdigest()[:16]}")
