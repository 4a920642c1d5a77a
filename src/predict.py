"""python -m src.predict ckpt_path=PATH input=IMAGE_OR_FOLDER: boxes drawn (PNG) and json out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from src.analysis.draw import draw_boxes
from src.data.image_io import decode_rgb, write_png
from src.training import cli, quiet
from src.training.checkpoints import load_hparams
from src.training.module import DetectionModule

log = logging.getLogger(__name__)
PRECISIONS = ("32-true", "bf16-mixed")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def list_images(path: str | Path) -> list[Path]:
    """A file, or every image file directly in a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"input={str(path)!r} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return files
    raise FileNotFoundError(f"input={str(path)!r}: no such file or folder")


@torch.no_grad()
def predict(
    ckpt_path: str,
    inputs: list[Path],
    output_dir: Path,
    score_threshold: float,
    device: str,
    precision: str = "32-true",
) -> list[dict]:
    """Returns one record per image: ``{"file", "width", "height", "detections": [...]}``
    with detections ``{"category_id", "category", "bbox": [x, y, w, h], "score"}``.

    ``precision``: ``"32-true"`` or ``"bf16-mixed"`` (bf16 autocast), as Lightning spells it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed: choose one of {PRECISIONS}")
    load_hparams(ckpt_path)  # clear error for a missing or foreign file
    module = DetectionModule.from_checkpoint(ckpt_path, map_location=device).eval()
    if module.task != "faster_rcnn":
        raise ValueError(
            f"ckpt_path={ckpt_path!r} is a {module.task} model: predict draws a faster_rcnn "
            "model's detections (an rpn model's proposals: python -m src.proposals)"
        )
    names = {int(c["id"]): c["name"] for c in module.categories}
    output_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for path in inputs:
        try:
            image = decode_rgb(path.read_bytes(), str(path))
        except (OSError, ValueError) as error:
            log.warning("skipping %s: not a readable image (%s)", path, error)
            continue
        with torch.autocast(
            torch.device(device).type, torch.bfloat16, enabled=precision != "32-true"
        ):
            (det,) = module([image.to(device)])
        det = {k: v.float() if v.is_floating_point() else v for k, v in det.items()}
        keep = det["scores"] >= score_threshold
        det = {k: v[keep].cpu() for k, v in det.items()}
        drawn = draw_boxes(image, det["boxes"], det["labels"], names, scores=det["scores"])
        write_png(drawn, output_dir / f"{path.stem}.png")
        xywh = det["boxes"].clone()
        xywh[:, 2:] -= xywh[:, :2]
        records.append(
            {
                "file": str(path),
                "height": int(image.shape[1]),
                "width": int(image.shape[2]),
                "detections": [
                    {
                        "category_id": int(c),
                        "category": names.get(int(c), str(int(c))),
                        "bbox": [round(float(v), 2) for v in b],
                        "score": round(float(s), 4),
                    }
                    for b, c, s in zip(xywh, det["labels"], det["scores"])
                ],
            }
        )
    (output_dir / "predictions.json").write_text(json.dumps(records, indent=2))
    return records


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.output_dir)
    records = predict(
        cfg.ckpt_path, list_images(cfg.input), out, cfg.score_threshold, cfg.device,
        cfg.precision,
    )  # fmt: skip
    n = sum(len(r["detections"]) for r in records)
    print(f"{len(records)} images, {n} detections >= {cfg.score_threshold}: {out}")


if __name__ == "__main__":
    quiet.install()
    cli.run(main)
