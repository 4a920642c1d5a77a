"""The training system end to end: every experiment and backbone runs, bad input is refused,
resuming reproduces an uninterrupted run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, HydraException
from run_helpers import TINY, compose_train
from torchvision.models import resnet50

from src.train import train
from src.training.config import ConfigError

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/experiment").glob("*.yaml"))
BACKBONES = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/backbone").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from src.data.synthetic import ensure_synthetic

    root = tmp_path_factory.mktemp("data")
    ensure_synthetic(root / "synthetic", num_train=16, num_val=8, image_size=128, seed=0)
    return root


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> Path:
    """A torchvision-format ResNet-50 state dict on local disk (random weights: nothing downloads)."""
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


def _fast_dev_run(overrides, tmp_path, data_dir):
    cfg = compose_train([*TINY, "debug=fast_dev_run", *overrides], tmp_path, data_dir)
    return cfg, train(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_a_fast_dev_run_step(experiment, tmp_path, data_dir, resnet50_file):
    overrides = [f"experiment={experiment}"]
    if experiment == "coco_r50_fpn_1x":
        # the full recipe, brought down to this machine: CPU, tiny synthetic images
        overrides += [
            "data=synthetic", "trainer=cpu", "trainer.devices=1", "logger=csv",
            f"backbone.pretrained_path={resnet50_file}",
        ]  # fmt: skip
    cfg, metrics = _fast_dev_run(overrides, tmp_path, data_dir)
    assert math.isfinite(metrics["train/loss"])
    assert "val/map" in metrics and "val/ar_1000" in metrics
    assert metrics["val/images"] == 1 * cfg.data.batch_size  # fast_dev_run: one val batch


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_runs_a_fast_dev_run_step(backbone, tmp_path, data_dir):
    _, metrics = _fast_dev_run([f"backbone={backbone}"], tmp_path, data_dir)
    assert math.isfinite(metrics["train/loss"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["backbone=resnet34", "fpn.lateral=false"],  # the README's example: row (e)
        ["fpn.top_down=false"],  # row (d) through the switch
        ["fpn.levels=[p2]"],  # row (f) through the switch
        ["backbone.norm=gn", "trainer.precision=bf16-mixed"],  # the GPU precision, on CPU
    ],
    ids=["resnet34-no-lateral", "no-top-down", "p2-only", "gn-bf16"],
)
def test_switch_overrides_run(overrides, tmp_path, data_dir):
    _, metrics = _fast_dev_run(overrides, tmp_path, data_dir)
    assert math.isfinite(metrics["train/loss"])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("fpn.lateral=maybe", "fpn.lateral"),
        ("backbone.norm=layer", "backbone.norm"),
        ("backbone.trainable_layers=7", "backbone.trainable_layers"),
        ("model.variant=c6", "model.variant"),
        ("fpn.levels=[p7]", "fpn.levels"),
        ("optim.base_lr=-1", "optim.base_lr"),
    ],
)
def test_bad_values_are_refused_before_anything_is_built(override, named, tmp_path, data_dir):
    cfg = compose_train([*TINY, override], tmp_path, data_dir)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as error:
        train(cfg)
    assert "allowed" in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_group_option_lists_the_allowed_ones(tmp_path, data_dir):
    with pytest.raises((ConfigCompositionException, HydraException)) as error:
        compose_train(["backbone=resnet35"], tmp_path, data_dir)
    assert "resnet35" in str(error.value) and "resnet18" in str(error.value)


def test_misspelled_key_is_refused(tmp_path, data_dir):
    with pytest.raises((ConfigCompositionException, HydraException)) as error:
        compose_train(["fpn.laterl=false"], tmp_path, data_dir)
    assert "laterl" in str(error.value)


def test_missing_checkpoint_is_refused_before_training(tmp_path, data_dir):
    cfg = compose_train([*TINY, f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path, data_dir)
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        train(cfg)


def _losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return {
            int(row["step"]): float(row["train/loss"])
            for row in csv.DictReader(f)
            if row.get("train/loss")
        }


def test_resume_matches_an_uninterrupted_run(tmp_path, data_dir):
    common = [
        *TINY, "backbone=simple", "trainer.log_every_n_steps=1", "data.hflip_prob=0.5",
        "~callbacks.prediction_panel",
    ]  # fmt: skip
    straight = tmp_path / "straight"
    m_straight = train(compose_train([*common, "trainer.max_epochs=2"], straight, data_dir))
    first = tmp_path / "first"
    interrupt = ["+callbacks.stop._target_=run_helpers.StopAfterEpochs", "+callbacks.stop.epochs=1"]
    train(compose_train([*common, "trainer.max_epochs=2", *interrupt], first, data_dir))
    resumed = tmp_path / "resumed"
    m_resumed = train(
        compose_train(
            [*common, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"],
            resumed,
            data_dir,
        )
    )
    whole, head, tail = _losses(straight), _losses(first), _losses(resumed)
    assert max(whole) == max(head | tail)  # same final global step
    assert set(head) | set(tail) == set(whole)
    for step, loss in (head | tail).items():
        assert loss == pytest.approx(whole[step], rel=1e-5, abs=1e-6), f"step {step}"
    assert m_resumed["val/map"] == pytest.approx(m_straight["val/map"], abs=1e-6)


def test_checkpoint_of_another_variant_is_refused(tmp_path, data_dir):
    first = tmp_path / "first"
    quick = ["trainer.max_epochs=1", "data.max_images=2", "test=false"]
    train(compose_train([*TINY, *quick], first, data_dir))
    ckpt = first / "checkpoints" / "last.ckpt"
    cfg = compose_train([*TINY, "model.variant=c4", f"ckpt_path={ckpt}"], tmp_path / "c4", data_dir)
    with pytest.raises(ValueError, match="variant: checkpoint 'fpn' vs config 'c4'"):
        train(cfg)
    assert not (tmp_path / "c4" / "checkpoints").exists()
