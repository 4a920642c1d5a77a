"""python -m src.train [overrides]: compose, seed, instantiate, fit, validate, test, report.

With no overrides this is the CPU demo: the synthetic dataset (made on first use) and a
ResNet-18 FPN at 256 px. Under ``-m`` each job gets its own folder; a failed job writes
its error to results.json and error.log, and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.models.detector import resolve_variant
from src.training import ddp
from src.training.checkpoints import check_resumable
from src.training.config import build_datamodule, detector_kwargs, validate
from src.training.console import print_metrics
from src.training.loggers import build_loggers, finish_wandb
from src.training.module import DetectionModule

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    nodes = (cfg or {}).values()
    return [
        hydra.utils.instantiate(n) for n in nodes if isinstance(n, DictConfig) and "_target_" in n
    ]


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job. Returns the final metrics (``val/*`` at the end, ``test/*`` of the best)."""
    validate(cfg)
    kwargs = detector_kwargs(cfg)
    if cfg.ckpt_path is not None:
        check_resumable(cfg.ckpt_path, kwargs)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module = DetectionModule(
        kwargs,
        datamodule.categories,
        proposal_recall=cfg.proposal_recall,
        **OmegaConf.to_container(cfg.optim, resolve=True),
    )
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = Path(hc.sweep.dir).name if multirun else None
    loggers = build_loggers(cfg.get("logger"), cfg.paths.output_dir, group)
    ddp.install()
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg.get("callbacks")), logger=loggers
    )
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is not None:  # which launcher wired the ranks: Lightning's own, SLURM, torchrun...
        log.info("cluster environment %s, world size %d", type(env).__name__, trainer.world_size)
    try:
        for lg in trainer.loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics = _scalars(trainer.callback_metrics)
        if cfg.test:
            best = (
                trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            )
            # `best` is the val/map-selected checkpoint; without one, test the weights in memory
            ckpt = best or (None if cfg.train else cfg.ckpt_path)
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
            metrics |= _scalars(trainer.callback_metrics)
    finally:
        finish_wandb(loggers)
    return metrics


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1}


def _paper_row(cfg: DictConfig) -> str:
    """The paper row this job runs (fpn + lateral=false is row (e), "no_lateral")."""
    try:
        return resolve_variant(
            cfg.model.variant, lateral=cfg.fpn.lateral, top_down=cfg.fpn.top_down,
            levels=cfg.fpn.levels,
        ).name  # fmt: skip
    except ValueError:
        return str(cfg.model.variant)


def _write_results(output_dir: Path, record: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(record, indent=2, sort_keys=True))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    is_rank_zero = pl.utilities.rank_zero_only.rank == 0
    record: dict[str, Any] = {
        "overrides": list(hc.overrides.task),
        "run_name": cfg.get("run_name"),
        "variant": cfg.model.variant,
        "backbone": cfg.backbone.name,
        "fpn": OmegaConf.to_container(cfg.fpn, resolve=True),
        "row": _paper_row(cfg),
    }
    start = time.perf_counter()
    try:
        metrics = train(cfg)
    except Exception as error:
        if not is_rank_zero:
            raise
        record |= {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        record["wall_time_s"] = round(time.perf_counter() - start, 1)
        _write_results(output_dir, record)
        (output_dir / "error.log").write_text(traceback.format_exc())
        if hc.mode == RunMode.MULTIRUN:
            # record the failure and let the sweep go on with the next job
            log.error("job %s failed: %s (see %s)", hc.job.num, error, output_dir / "error.log")
            return None
        raise
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # the next multirun job starts its own process group
            torch.distributed.destroy_process_group()
    if is_rank_zero:
        record |= {"status": "ok", "metrics": metrics}
        record["wall_time_s"] = round(time.perf_counter() - start, 1)
        _write_results(output_dir, record)
        print_metrics(metrics, title=f"{record['run_name']}  ({output_dir})")
    return metrics.get("val/map")


if __name__ == "__main__":
    main()
