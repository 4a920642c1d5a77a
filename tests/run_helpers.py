"""Shared by the training-system tests: compose the real Hydra config, run the real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import src.training.config  # noqa: F401  (registers the typed schemas that conf/ names)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# A tiny synthetic set and detector: seconds per run on 2 CPU cores.
TINY = [
    "data.synthetic.num_train=16",
    "data.synthetic.num_val=8",
    "data.synthetic.image_size=128",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=2",
    "model.min_size=128",
    "model.max_size=128",
    "model.anchor_scale=0.25",
    "model.rpn_pre_nms_top_n_train=300",
    "model.rpn_post_nms_top_n_train=150",
    "model.rpn_pre_nms_top_n_test=300",
    "model.rpn_post_nms_top_n_test=150",
    "model.rpn_batch_size_per_image=64",
    "model.box_batch_size_per_image=64",
    "callbacks.prediction_panel.num_images=2",
    "~callbacks.progress_bar",
]


def compose_train(overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    """The composed `train` config, as `python -m src.train` would see it, for in-process runs."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, f"paths.data_dir={data_dir}", f"paths.log_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
    return cfg


def run_module(
    module: str, args: list[str], timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m module args` from the repo root, as a user would type it."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def helper_callback(name: str, cls: str, **kwargs) -> list[str]:
    """Overrides adding ``run_helpers.<cls>(**kwargs)`` as callback ``name`` to a run started by
    ``run_module(..., env=HELPERS)`` (tests/ on its PYTHONPATH)."""
    return [f"+callbacks.{name}._target_=run_helpers.{cls}",
            *(f"+callbacks.{name}.{k}={v}" for k, v in kwargs.items())]  # fmt: skip


class StopAfterEpochs:
    """A Lightning callback that interrupts training after ``epochs`` epochs, like a preempted
    job: the schedule still plans for max_epochs, and last.ckpt is the mid-run checkpoint."""

    def __new__(cls, epochs: int):
        import pytorch_lightning as pl

        class _Stop(pl.Callback):
            def on_train_epoch_end(self, trainer, module):
                if trainer.current_epoch + 1 >= epochs:
                    trainer.should_stop = True

        return _Stop()


class PoisonLearningRate:
    """A Lightning callback that sets a learning rate of 1e6 from epoch ``epoch`` on: a run that
    trains well, then diverges."""

    def __new__(cls, epoch: int):
        import pytorch_lightning as pl

        class _Poison(pl.Callback):
            def on_train_epoch_start(self, trainer, module):
                if trainer.current_epoch >= epoch:
                    for group in trainer.optimizers[0].param_groups:
                        group["lr"] = 1e6
                    trainer.lr_scheduler_configs.clear()  # keep it there

        return _Poison()


class SigtermAtEpoch:
    """A Lightning callback that sends SIGTERM to its own process as epoch ``epoch`` starts, as
    a scheduler preempting the job would; the epochs before it have their checkpoint."""

    def __new__(cls, epoch: int):
        import os
        import signal

        import pytorch_lightning as pl

        class _Sigterm(pl.Callback):
            def on_train_epoch_start(self, trainer, module):
                if trainer.current_epoch >= epoch:
                    os.kill(os.getpid(), signal.SIGTERM)

        return _Sigterm()
