"""python -m src.eval ckpt_path=PATH [data=...] [split=...]: COCO metrics and a results json.

The model is rebuilt from the checkpoint's own hyperparameters (variant, backbone, image
size); the data config only says where the images are. The results json holds one
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection in the
dataset's original category ids, so pycocotools' ``loadRes`` + ``COCOeval`` score it as is.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from src.training import cli, quiet
from src.training.checkpoints import load_hparams
from src.training.config import build_datamodule
from src.training.console import print_metrics
from src.training.module import DetectionModule


def check_categories(ckpt_path: str, saved: list[dict], data: list[dict]) -> None:
    """The checkpoint's label order must be the dataset's, or every class id would be wrong."""
    if [int(c["id"]) for c in saved] != [int(c["id"]) for c in data]:
        raise ValueError(
            f"ckpt_path={ckpt_path!r} was trained on categories {[c['id'] for c in saved][:10]}... "
            f"({len(saved)}), the data has {[c['id'] for c in data][:10]}... ({len(data)}): "
            "evaluate it on a dataset with the same categories"
        )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    hparams = load_hparams(cfg.ckpt_path)
    split = cfg.split or cfg.data.val_split
    with open_dict(cfg):
        cfg.data.test_split = split
    datamodule = build_datamodule(cfg)
    check_categories(cfg.ckpt_path, hparams["categories"], datamodule.categories)
    module = DetectionModule.from_checkpoint(cfg.ckpt_path)
    module.coco_results = []
    trainer = hydra.utils.instantiate(cfg.trainer, devices=1, strategy="auto")
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    out = Path(cfg.results_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(module.coco_results))
    metrics = {k: float(v) for k, v in metrics.items()}
    (out.parent / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print_metrics(metrics, title=f"{Path(cfg.ckpt_path).name} on {split}")
    print(f"{len(module.coco_results)} detections written to {out}")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    OmegaConf.resolve(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    quiet.install()
    cli.run(main)
