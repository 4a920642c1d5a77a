"""The typed configs: schemas that match what they describe, one key per decision, data configs
that carry data only, and one line per configuration error."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf
from run_helpers import compose_train

from src.models.detector import TORCHVISION_KNOBS
from src.training.cli import describe_type
from src.training.config import (
    BackboneConfig,
    ConfigError,
    FpnConfig,
    ModelConfig,
    TrainerConfig,
    check,
    detector_kwargs,
)

DATA = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/data").glob("*.yaml"))
IMAGE_SCALE = ("min_size", "max_size", "anchor_scale")


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_trainer_schema_defaults_are_lightnings():
    """A schema default is passed to the Trainer: it must be the Trainer's own default."""
    signature = inspect.signature(pl.Trainer.__init__).parameters
    for name, f in _fields(TrainerConfig).items():
        if name == "_target_":
            continue
        assert name in signature, f"trainer.{name} is not a Trainer argument"
        assert _default(f) == signature[name].default, name


def test_model_schema_covers_every_torchvision_knob_with_its_default():
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    fields = _fields(ModelConfig)
    assert set(TORCHVISION_KNOBS) <= set(fields), set(TORCHVISION_KNOBS) - set(fields)
    defaults = {
        n: p.default
        for fn in (GeneralizedRCNNTransform.__init__, FasterRCNN.__init__)
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for name in TORCHVISION_KNOBS:
        assert _default(fields[name]) == defaults[name], name


def test_each_detector_argument_comes_from_one_group():
    backbone = set(_fields(BackboneConfig))
    fpn = set(_fields(FpnConfig))
    model = set(_fields(ModelConfig))
    assert not (backbone & fpn) and not (backbone & model) and not (fpn & model)


@pytest.mark.parametrize("data", DATA)
def test_a_data_config_holds_data_and_image_scale_only(data, tmp_path):
    """`--cfg job data=X`: the detector and optimizer are the same whatever the data."""
    base = compose_train([], tmp_path, tmp_path)
    other = compose_train([f"data={data}"], tmp_path, tmp_path)
    for group in ("backbone", "fpn", "optim"):
        assert base[group] == other[group], group
    drop = {k: None for k in IMAGE_SCALE}
    assert {**base.model, **drop} == {**other.model, **drop}
    assert base.trainer == other.trainer


def test_the_default_is_the_cpu_demo_recipe(tmp_path):
    """`make train` trains what it trained before the recipe left conf/data/synthetic.yaml."""
    cfg = compose_train([], tmp_path, tmp_path)
    assert cfg.fpn.out_channels == 128 and cfg.model.representation_size == 512
    assert cfg.model.box_batch_size_per_image == 128 and cfg.optim.lr == 0.02
    assert cfg.trainer.max_epochs == 5 and cfg.trainer.gradient_clip_val == 10.0
    assert (cfg.model.min_size, cfg.model.max_size, cfg.model.anchor_scale) == (256, 256, 0.5)
    assert cfg.backbone.name == "resnet18" and cfg.backbone.norm == "bn"
    # an experiment on the default data keeps the recipe
    c5 = compose_train(["experiment=b_c5"], tmp_path, tmp_path)
    assert c5.model.variant == "c5" and c5.trainer.max_epochs == 5 and c5.optim.lr == 0.02
    paper = compose_train(["recipe=paper"], tmp_path, tmp_path)
    assert paper.fpn.out_channels == 256 and paper.optim.lr is None


def test_the_cpu_demo_is_sized_for_speed_and_the_study_keeps_table_1s_counts(tmp_path):
    """Issue 9's choices: NHWC, RPN counts for 256 px images, fp32 (bf16 cost accuracy); the
    study recipe keeps 1000 proposals at test, which Table 1's AR@1000 needs."""
    cfg = compose_train([], tmp_path, tmp_path)
    assert cfg.model.channels_last is True and cfg.trainer.precision == "32-true"
    assert (cfg.model.rpn_pre_nms_top_n_train, cfg.model.rpn_post_nms_top_n_train) == (600, 300)
    assert cfg.model.rpn_post_nms_top_n_test == 300
    check(cfg)
    study = compose_train(["recipe=cpu_study", "experiment=table1/c_fpn"], tmp_path, tmp_path)
    assert study.model.rpn_post_nms_top_n_test == 1000
    check(study)


def test_the_detection_study_recipe_is_what_the_recorded_runs_composed(tmp_path):
    """docs/results/study_2026-11-26.md ran `experiment=d_bottom_up trainer.max_epochs=8`; the
    recipe that makes it a one-command sweep must compose the same run (tags aside)."""
    from omegaconf import OmegaConf

    def plain(overrides):
        cfg = OmegaConf.to_container(compose_train(overrides, tmp_path, tmp_path), resolve=True)
        cfg.pop("tags")
        cfg["callbacks"].pop("prediction_panel")  # pictures only
        return cfg

    recipe = plain(["recipe=cpu_study_detection", "experiment=table3/d_bottom_up"])
    recorded = plain(["experiment=d_bottom_up", "trainer.max_epochs=8"])
    assert recipe == recorded and recipe["trainer"]["max_epochs"] == 8


def test_detector_kwargs_carry_the_resolved_variant(tmp_path):
    cfg = compose_train(["fpn.lateral=false"], tmp_path, tmp_path)
    spec = check(cfg)
    kwargs = detector_kwargs(cfg, spec)
    assert spec.name == "no_lateral" and spec.paper_row == "e"
    assert (kwargs["variant"], kwargs["lateral"], kwargs["top_down"]) == ("no_lateral", False, True)
    assert kwargs["out_channels"] == 128 and kwargs["backbone"] == "resnet18"
    assert type(kwargs["norm"]) is str  # a plain str, not the schema's enum: checkpoints hold it


def test_semantic_errors_name_the_full_key(tmp_path):
    cfg = compose_train(["fpn.lateral=false", "fpn.top_down=false"], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"fpn\.lateral=False and fpn\.top_down=False"):
        check(cfg)


def test_types_are_described_in_words():
    assert describe_type(int) == "an integer"
    assert describe_type(int | None) == "an integer or null"
    assert describe_type(list[float]) == "a list of number"
    assert describe_type(bool) == "true or false"


def test_a_plus_override_still_reaches_the_trainer(tmp_path):
    cfg = compose_train(["+trainer.barebones=false"], tmp_path, tmp_path)
    assert OmegaConf.to_container(cfg.trainer)["barebones"] is False


def test_an_interpolation_to_a_missing_key_is_one_line_naming_it() -> None:
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationKeyError

    from src.training.cli import one_line

    cfg = OmegaConf.create({"output": "${nope}"})
    with pytest.raises(InterpolationKeyError) as caught:
        OmegaConf.to_container(cfg, resolve=True)
    message = one_line(caught.value)
    assert message is not None and "None" not in message and "'nope'" in message
