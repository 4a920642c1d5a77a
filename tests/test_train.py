"""The training system end to end: every experiment and backbone runs and builds what it names,
bad input is refused, resuming reproduces an uninterrupted run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import ConfigCompositionException, HydraException
from pytorch_lightning.callbacks import ModelCheckpoint
from run_helpers import TINY, compose_train, helper_callback, run_module
from torchvision.models import resnet50

from src.train import best_checkpoint, train
from src.training.cli import one_line
from src.training.config import ConfigError

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/experiment").glob("*.yaml"))
BACKBONES = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/backbone").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(module_tmp) -> Path:
    from src.data.synthetic import ensure_synthetic

    root = module_tmp("data")
    ensure_synthetic(root / "synthetic", num_train=16, num_val=8, image_size=128, seed=0)
    return root


@pytest.fixture(scope="module")
def resnet50_file(module_tmp) -> Path:
    """A torchvision-format ResNet-50 state dict on local disk (random weights: nothing downloads)."""
    path = module_tmp("weights") / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


def _fast_dev_run(overrides, tmp_path, data_dir):
    cfg = compose_train([*TINY, "debug=fast_dev_run", *overrides], tmp_path, data_dir)
    return cfg, train(cfg)


# what each experiment file must build: (variant, paper row, RoI levels, backbone)
EXPECTED = {
    "a_c4": ("c4", "a", ["c4"], "resnet18"),
    "b_c5": ("c5", "b", ["c5"], "resnet18"),
    "c_fpn": ("fpn", "c", ["p2", "p3", "p4", "p5"], "resnet18"),
    "d_bottom_up": ("bottom_up", "d", ["p2", "p3", "p4", "p5"], "resnet18"),
    "e_no_lateral": ("no_lateral", "e", ["p2", "p3", "p4", "p5"], "resnet18"),
    "f_p2_only": ("p2_only", "f", ["p2"], "resnet18"),
    "coco_r50_fpn_1x": ("fpn", "c", ["p2", "p3", "p4", "p5"], "resnet50"),
}


def test_every_experiment_file_is_expected():
    assert sorted(EXPECTED) == EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_a_fast_dev_run_step(experiment, tmp_path, data_dir, resnet50_file):
    overrides = [f"experiment={experiment}"]
    if experiment == "coco_r50_fpn_1x":
        # the full recipe, brought down to this machine: CPU, tiny synthetic images
        overrides += [
            "data=synthetic", "trainer=cpu", "trainer.devices=1", "logger=csv",
            f"backbone.pretrained_path={resnet50_file}",
        ]  # fmt: skip
    cfg, result = _fast_dev_run(overrides, tmp_path, data_dir)
    metrics, model = result.metrics, result.module.model
    assert math.isfinite(metrics["train/loss"])
    assert "val/map" in metrics and "val/ar_100" in metrics
    # AR@1000 only where 1000 proposals per image are kept (not the CPU demo's 300)
    assert ("val/ar_1000" in metrics) == (cfg.model.rpn_post_nms_top_n_test >= 1000)
    assert metrics["val/images"] == 1 * cfg.data.batch_size  # fast_dev_run: one val batch
    variant, row, roi_levels, backbone = EXPECTED[experiment]
    spec = result.module.variant_spec
    assert (spec.name, spec.paper_row) == (variant, row)
    assert model.roi_heads.box_roi_pool.featmap_names == roi_levels
    assert result.module.hparams["detector"]["backbone"] == backbone


# c4 (the third residual stage) holds 2 / 6 / 6 / 23 blocks in ResNet-18/34/50/101, and the
# simple net one block of two convolutions; c5 ends with 512 or 2048 channels
BACKBONE_SHAPES = {
    "resnet18": (2, 512), "resnet34": (6, 512), "resnet50": (6, 2048), "resnet101": (23, 2048),
    "simple": (2, 512),
}  # fmt: skip


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_runs_a_fast_dev_run_step(backbone, tmp_path, data_dir):
    _, result = _fast_dev_run([f"backbone={backbone}"], tmp_path, data_dir)
    assert math.isfinite(result.metrics["train/loss"])
    body = result.module.model.backbone.body
    blocks, c5_channels = BACKBONE_SHAPES[backbone]
    assert len(body.c4) == blocks
    assert body.out_channels["c5"] == c5_channels


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
    cfg, result = _fast_dev_run(overrides, tmp_path, data_dir)
    assert math.isfinite(result.metrics["train/loss"])
    model, spec = result.module.model, result.module.variant_spec
    fpn = model.backbone.fpn
    roi_levels = model.roi_heads.box_roi_pool.featmap_names
    anchors = model.rpn.anchor_generator
    if "fpn.lateral=false" in overrides:  # row (e): only c5 keeps its 1x1, on ResNet-34
        assert (spec.name, spec.lateral) == ("no_lateral", False)
        assert list(fpn.lateral) == ["c5"] and fpn.top_down
        assert len(model.backbone.body.c2) == 3  # ResNet-34's first stage: 3 basic blocks
    elif "fpn.top_down=false" in overrides:  # row (d): laterals, no top-down merge
        assert (spec.name, spec.top_down) == ("bottom_up", False)
        assert list(fpn.lateral) == ["c2", "c3", "c4", "c5"] and not fpn.top_down
    elif "fpn.levels=[p2]" in overrides:  # row (f): RoIs and the RPN's 15 anchors on p2 alone
        assert spec.name == "p2_only" and spec.levels == ("p2",)
        assert roi_levels == ["p2"] and list(fpn.output) == ["p2"]
        assert anchors.num_anchors_per_location() == [15]
    else:  # group norm in bf16 autocast
        norms = [m for m in model.backbone.body.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert norms and not any(
            isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules()
        )
        assert cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize(
    ("override", "named", "allowed"),
    [
        ("fpn.lateral=maybe", "fpn.lateral", "true or false"),
        ("backbone.norm=layer", "backbone.norm", "one of"),
        ("model.variant=c6", "model.variant", "one of"),
        ("fpn.levels=[p7]", "fpn.levels", "one of"),
        ("fpn.out_channels=wide", "fpn.out_channels", "an integer"),
        ("model.min_size=[a]", "model.min_size", "an integer"),
        ("trainer.max_epochs=abc", "trainer.max_epochs", "an integer or null"),
        ("backbone.trainable_layers=x", "backbone.trainable_layers", "an integer or null"),
    ],
)
def test_wrong_types_are_refused_while_composing(override, named, allowed, tmp_path, data_dir):
    with pytest.raises(ConfigCompositionException) as error:
        compose_train([*TINY, override], tmp_path, data_dir)
    line = one_line(error.value)
    assert line.startswith(f"{override}:") and allowed in line, line
    assert "\n" not in line
    assert named in str(error.value.__cause__)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("backbone.trainable_layers=7", "backbone.trainable_layers"),
        ("optim.base_lr=-1", "optim.base_lr"),
        ("fpn.levels=[p6]", "fpn.levels"),
        ("backbone.widths=[8,8,8,8,8]", "backbone.widths"),
        ("model.variant=c4", "model.variant"),  # with fpn.lateral=false: no pyramid to switch
    ],
)
def test_bad_values_are_refused_before_anything_is_built(override, named, tmp_path, data_dir):
    extra = ["fpn.lateral=false"] if override == "model.variant=c4" else []
    cfg = compose_train([*TINY, override, *extra], tmp_path, data_dir)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as error:
        train(cfg)
    assert "allowed" in str(error.value) or "apply" in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


def test_a_wrong_type_is_one_line_and_builds_nothing(tmp_path):
    """As the user sees it: `python -m src.train fpn.out_channels=wide`. One process (10 s to
    start on 2 cores); the message of each wrong type is checked in process above."""
    override = "fpn.out_channels=wide"
    run_dir = tmp_path / "run"
    proc = run_module("src.train", [override, f"hydra.run.dir={run_dir}"], timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {override}:") and "an integer" in lines[0], lines[0]
    assert not run_dir.exists()


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
    m_straight = train(compose_train([*common, "trainer.max_epochs=2"], straight, data_dir)).metrics
    first = tmp_path / "first"
    interrupt = helper_callback("stop", "StopAfterEpochs", epochs=1)
    train(compose_train([*common, "trainer.max_epochs=2", *interrupt], first, data_dir))
    resumed = tmp_path / "resumed"
    m_resumed = train(
        compose_train(
            [*common, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"],
            resumed,
            data_dir,
        )
    ).metrics
    whole, head, tail = _losses(straight), _losses(first), _losses(resumed)
    assert max(whole) == max(head | tail)  # same final global step
    assert set(head) | set(tail) == set(whole)
    for step, loss in (head | tail).items():
        assert loss == pytest.approx(whole[step], rel=1e-5, abs=1e-6), f"step {step}"
    assert m_resumed["val/map"] == pytest.approx(m_straight["val/map"], abs=1e-6)


def test_last_ckpt_is_the_last_epoch_when_the_monitor_stops_improving(tmp_path, data_dir):
    # val/images is equal every epoch, so epoch 0 stays the best; Lightning 2.6's
    # save_last=True writes last.ckpt only beside a new best, and a resume redid such epochs
    run = tmp_path / "run"
    monitor_flat = ["callbacks.model_checkpoint.monitor=val/images", "~callbacks.prediction_panel"]
    train(
        compose_train([*TINY, "trainer.max_epochs=2", "test=false", *monitor_flat], run, data_dir)
    )
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["epoch_000.ckpt", "last.ckpt"]
    best = torch.load(ckpts / "epoch_000.ckpt", weights_only=True, map_location="cpu")
    last = torch.load(ckpts / "last.ckpt", weights_only=True, map_location="cpu")
    assert (best["epoch"], last["epoch"]) == (0, 1)
    assert last["global_step"] == 2 * best["global_step"]


def test_test_reads_the_monitored_checkpoint_whatever_the_callback_order(tmp_path):
    # trainer.checkpoint_callback is the first ModelCheckpoint of any kind: with the
    # unmonitored last.ckpt writer listed first, test would have read the last epoch
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    best = ModelCheckpoint(dirpath=tmp_path, filename="epoch_{epoch:03d}", monitor="val/map")
    last.best_model_path, best.best_model_path = "last.ckpt", "epoch_003.ckpt"
    trainer = pl.Trainer(callbacks=[last, best], logger=False, enable_progress_bar=False)
    assert trainer.checkpoint_callback is last
    assert best_checkpoint(trainer) == "epoch_003.ckpt"
    assert best_checkpoint(pl.Trainer(callbacks=[last], logger=False)) == ""


def test_checkpoint_of_another_variant_is_refused(tmp_path, data_dir):
    first = tmp_path / "first"
    quick = ["trainer.max_epochs=1", "data.max_images=2", "test=false"]
    train(compose_train([*TINY, *quick], first, data_dir))
    ckpt = first / "checkpoints" / "last.ckpt"
    cfg = compose_train([*TINY, "model.variant=c4", f"ckpt_path={ckpt}"], tmp_path / "c4", data_dir)
    with pytest.raises(ValueError, match="variant: checkpoint 'fpn' vs config 'c4'"):
        train(cfg)
    assert not (tmp_path / "c4" / "checkpoints").exists()
