"""python -m src.train [overrides]: compose, check, instantiate, fit, validate, test, report.

With no overrides this is the CPU demo: the synthetic dataset (made on first use), a
ResNet-18 FPN at 256 px and the ``cpu_demo`` recipe. Under ``-m`` each job gets its own
folder; a failed job writes its error to results.json and error.log, and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from src.analysis.metrics import monitor_for
from src.models.variants import VariantSpec
from src.training import cli, ddp, machine, quiet
from src.training.callbacks import EpochTimer
from src.training.checkpoint_io import AtomicCheckpointIO
from src.training.checkpoints import check_resumable
from src.training.config import build_datamodule, check, detector_kwargs
from src.training.console import print_metrics
from src.training.history import Position, ResumableCSVLogger, drop_panels_after
from src.training.loggers import build_loggers, finish_wandb
from src.training.module import DetectionModule

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one job produced: final metrics (``val/*`` at the end, ``test/*`` of the best
    checkpoint) and the module as built (its ``variant_spec`` says what was trained)."""

    metrics: dict[str, float]
    module: DetectionModule
    skipped_images: dict[str, int]  # unreadable images skipped per split role (on_bad_image=skip)
    timing: dict[str, float]  # EpochTimer's: fit_s, validation_s, validation_metrics_s
    machine: dict[str, Any]  # src.training.machine.describe() of the devices this rank ran on


def build_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    nodes = (cfg or {}).values()
    return [
        hydra.utils.instantiate(n) for n in nodes if isinstance(n, DictConfig) and "_target_" in n
    ]


def build_module(cfg: DictConfig, spec: VariantSpec, categories: list[dict]) -> DetectionModule:
    """The DetectionModule of ``cfg``, whose variant ``check(cfg)`` resolved to ``spec``."""
    module = DetectionModule(
        detector_kwargs(cfg, spec),
        categories,
        proposal_recall=cfg.proposal_recall,
        **OmegaConf.to_container(cfg.optim, resolve=True),
    )
    assert module.variant_spec == spec, (module.variant_spec, spec)
    return module


def train(cfg: DictConfig, on_built=None) -> TrainResult:
    """Run one job. ``on_built(module)`` is called once the model exists (results.json)."""
    spec = check(cfg)  # every value, before the data or the model exist
    ddp.check_launcher(cfg.trainer)  # under -m: can hydra/launcher run this trainer's ranks?
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, spec, datamodule.categories)
    resumed = None
    if cfg.ckpt_path is not None:
        resumed = check_resumable(cfg.ckpt_path, module.variant_spec, module.hparams["detector"])
    if on_built is not None:
        on_built(module)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = Path(hc.sweep.dir).name if multirun else None
    loggers = build_loggers(cfg.get("logger"), cfg.paths.output_dir, group)
    if resumed is not None:
        _keep_history(loggers, Position(resumed["epoch"], resumed["global_step"]))
    ddp.install()
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=build_callbacks(cfg.get("callbacks")),
        logger=loggers,
        # a kill during a save never leaves a cut last.ckpt: temp file, fsync, rename
        plugins=[AtomicCheckpointIO()],
    )
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is not None:  # which launcher wired the ranks: Lightning's own, SLURM, torchrun...
        log.info("cluster environment %s, world size %d", type(env).__name__, trainer.world_size)
    try:
        for lg in trainer.loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        metrics = _scalars(trainer.callback_metrics)
        if cfg.test:
            best = best_checkpoint(trainer)
            # without a monitor-selected checkpoint, test the weights in memory
            ckpt = best or (None if cfg.train else cfg.ckpt_path)
            trainer.test(
                module, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True
            )
            metrics |= _scalars(trainer.callback_metrics)
    finally:
        finish_wandb(loggers)
    timers = [cb for cb in trainer.callbacks if isinstance(cb, EpochTimer)]
    timing = timers[0].summary(module) if timers else {}
    # described after the run: the launcher set this rank's threads, and a CPU job on a GPU
    # host names no GPU
    cuda = trainer.strategy.root_device.type == "cuda"
    used = machine.describe(list(trainer.device_ids) if cuda else [])
    return TrainResult(metrics, module, datamodule.skipped_images, timing, used)


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The path of the monitor-selected checkpoint, or "" without one.

    Taken from the first checkpoint callback that has a monitor, not from
    ``trainer.checkpoint_callback`` (the first of any kind), which would be the unmonitored
    ``last_checkpoint`` if a config listed it first: test would then read the last epoch.
    """
    monitored = [cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)]
    return monitored[0].best_model_path if monitored else ""


def _keep_history(loggers: list, position: Position) -> None:
    """Resuming: keep the CSV rows and panels the checkpoint covers, drop what it does not."""
    log.info("resuming at epoch %d, step %d", position.epoch, position.global_step)
    for lg in loggers:
        if isinstance(lg, ResumableCSVLogger):
            lg.resume_from(position)
            # the panels live in the first logger's folder (trainer.log_dir)
            if lg is loggers[0]:
                drop_panels_after(Path(lg.log_dir) / "predictions", position.epoch)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1}


def objective(metrics: dict[str, float], key: str) -> float:
    """What main returns to a sweeper (the value Optuna optimizes): ``metrics[key]`` as a float, NaN
    when the job has no such metric. Optuna 2.10 records a NaN trial as failed (never as the
    worst or best value), and the study goes on."""
    if key not in metrics:
        log.warning("%s is not among this job's metrics (%s): NaN goes to the sweeper", key,
                    ", ".join(sorted(metrics)) or "none")  # fmt: skip
        return math.nan
    return float(metrics[key])


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float as None: results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def _write_results(output_dir: Path, record: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(strict_json(record), indent=2, sort_keys=True, allow_nan=False)
    (output_dir / "results.json").write_text(text)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    is_rank_zero = pl.utilities.rank_zero_only.rank == 0
    record: dict[str, Any] = {
        "overrides": list(hc.overrides.task),
        "run_name": cfg.get("run_name"),
        "backbone": str(cfg.backbone.name),
        "seed": cfg.seed,
    }

    def built(module: DetectionModule) -> None:
        # what the built model is, never a second reading of the config
        record.update(module.variant_spec.as_dict())
        record["task"] = module.task
        if module.task == "fast_rcnn":
            record["proposals"] = dict(cfg.data.proposals)
        record["fpn_out_channels"] = module.hparams["detector"].get("out_channels")

    start = time.perf_counter()
    try:
        result = train(cfg, on_built=built)
        metrics = result.metrics
        record["skipped_images"] = result.skipped_images
        record["timing"] = result.timing
        record["machine"] = result.machine  # the report tells a seed rerun elsewhere by it
    except SIGTERMException:
        # SIGTERM (a scheduler's preemption, `timeout`, `kill`): Lightning stops at the next
        # step; without this record the job would leave no results.json
        if is_rank_zero:
            last = output_dir / "checkpoints" / "last.ckpt"
            resume = f"resume with ckpt_path={last}" if last.is_file() else "no checkpoint yet"
            record |= {"status": "interrupted", "error": f"SIGTERM before the end; {resume}"}
            record["machine"] = machine.describe()
            record["wall_time_s"] = round(time.perf_counter() - start, 1)
            _write_results(output_dir, record)
            log.error("job stopped by SIGTERM (%s)", resume)
        raise  # cli.run turns it into exit status 143, as for every entry point
    except Exception as error:
        if not is_rank_zero:
            raise
        record |= {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        record["machine"] = machine.describe()  # which devices it ran on is not known
        record["wall_time_s"] = round(time.perf_counter() - start, 1)
        _write_results(output_dir, record)
        (output_dir / "error.log").write_text(traceback.format_exc())
        if hc.mode == RunMode.MULTIRUN:
            # record the failure and let the sweep go on with the next job
            log.error("job %s failed: %s (see %s)", hc.job.num, error, output_dir / "error.log")
            return math.nan  # a sweeper's failed trial (Optuna refuses NaN)
        raise
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # the next multirun job starts its own process group
            torch.distributed.destroy_process_group()
        ddp.release()  # and Lightning's rank variables go
    if is_rank_zero:
        record |= {"status": "ok", "metrics": metrics}
        record["wall_time_s"] = round(time.perf_counter() - start, 1)
        _write_results(output_dir, record)
        print_metrics(metrics, title=f"{record['run_name']}  ({output_dir})")
    return objective(metrics, cfg.get("optimized_metric") or monitor_for(str(cfg.model.task)))


if __name__ == "__main__":
    quiet.install()
    cli.run(main)
