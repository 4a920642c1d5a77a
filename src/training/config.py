"""Typed configs: every value of ``conf/`` has a type that Hydra checks when it composes.

The dataclasses below are registered in Hydra's ConfigStore as the schemas of the primary
configs (``train``, ``eval``, ``predict``): ``trainer.max_epochs=abc``, ``fpn.out_channels=wide``
or ``backbone.norm=layer`` are refused while composing, before anything is built, naming the
key, the value and what is allowed (:func:`src.training.cli.one_line_errors` prints it as one
line). What a type cannot say (ranges, combinations of switches) is checked by
:func:`check`, which reuses the rules of the constructors themselves (one definition each) and
names the full key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from src.analysis.metrics import monitor_for
from src.data.coco import BAD_IMAGE_MODES
from src.data.synthetic import KINDS as SYNTHETIC_KINDS
from src.models.backbones import BACKBONES, NORMS, check_backbone_options
from src.models.detector import TASKS, VARIANTS, VariantSpec, resolve_variant
from src.models.fpn import PYRAMID_LEVELS


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key and the allowed values."""


class _Choice(str, Enum):
    """A string choice: compares equal to its value and prints as it (``${backbone.name}``)."""

    def __str__(self) -> str:
        return str(self.value)


BackboneName = _Choice("BackboneName", {n: n for n in BACKBONES})
Norm = _Choice("Norm", {n: n for n in NORMS})
Variant = _Choice("Variant", {n: n for n in VARIANTS})
Task = _Choice("Task", {n: n for n in TASKS})
Level = _Choice("Level", {n: n for n in PYRAMID_LEVELS})
BadImageMode = _Choice("BadImageMode", {n: n for n in BAD_IMAGE_MODES})
SyntheticKind = _Choice("SyntheticKind", {n: n for n in SYNTHETIC_KINDS})
RAISE = BadImageMode("raise")


@dataclass
class BackboneConfig:
    """``conf/backbone/``: the bottom-up pathway (``src.models.backbones.build_backbone``)."""

    name: BackboneName = BackboneName.resnet18
    norm: Norm = Norm.bn
    trainable_layers: int | None = None  # 0..5; None: 3 with pretrained weights, else 5
    pretrained_path: str | None = None
    weights: str | None = None  # torchvision's, e.g. IMAGENET1K_V1; not with pretrained_path
    widths: list[int] | None = None  # backbone=simple only


@dataclass
class FpnConfig:
    """``conf/fpn/``: the top-down pathway's switches; None: as ``model.variant`` defines it."""

    lateral: bool | None = None
    top_down: bool | None = None
    levels: list[Level] | None = None
    out_channels: int = 256


@dataclass
class ModelConfig:
    """``conf/model/``: the paper's variant and torchvision's FasterRCNN knobs (its defaults)."""

    variant: Variant = Variant.fpn
    # faster_rcnn (Table 3), rpn (Table 1: the RPN alone), fast_rcnn (Table 2: fixed proposals)
    task: Task = Task.faster_rcnn
    min_size: int = 800
    max_size: int = 1333
    anchor_scale: float = 1.0
    representation_size: int = 1024
    channels_last: bool = False  # NHWC weights and inputs: faster, above all in bf16
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    size_divisible: int = 32
    fixed_size: list[int] | None = None
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    # At most this many positive anchors per box in the RPN's training (a diagnostic of row
    # (f)'s anchor imbalance, src/models/rpn_sampling.py); None: torchvision's (the paper's) rule.
    rpn_positives_per_box: int | None = None
    # True: the RPN's losses stop at its input, so the features learn from the RoI heads alone
    # (a diagnostic of row (f)'s one map carrying both tasks' gradients,
    # src/models/rpn_gradient.py); None: they reach the features, as in torchvision.
    rpn_detach_features: bool | None = None
    rpn_score_thresh: float = 0.0
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    bbox_reg_weights: list[float] | None = None


@dataclass
class OptimConfig:
    """``conf/optim/``: SGD and the paper's step schedule (``DetectionModule``'s arguments)."""

    lr: float | None = None  # None: base_lr scaled linearly to the effective batch
    base_lr: float = 0.02
    base_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    norm_weight_decay: float = 0.0
    bias_weight_decay: float = 0.0
    warmup_steps: int = 500
    warmup_factor: float = 0.001
    milestones: list[float] = field(default_factory=lambda: [2 / 3, 8 / 9])
    gamma: float = 0.1
    max_loss: float | None = None  # stop when the training loss exceeds it (NaN/inf always stop)


@dataclass
class SyntheticConfig:
    """``data.synthetic``: the generated dataset's kind and size (``src.data.synthetic``)."""

    kind: SyntheticKind = SyntheticKind.shapes  # shapes, or glyphs: letters told by inner structure
    num_train: int = 600
    num_val: int = 150
    image_size: int = 256
    seed: int = 0
    # None: made on first use only at default_root, so that a mistyped data.root is an error
    generate: bool | None = None
    default_root: str = MISSING


@dataclass
class ProposalFiles:
    """``data.proposals``: fixed proposals per role (``python -m src.proposals``), fast_rcnn."""

    train: str | None = None
    val: str | None = None
    test: str | None = None  # None: val's when the test split is the val split


@dataclass
class DataConfig:
    """``conf/data/``: a ``CocoDataModule`` (see its docstring for each argument)."""

    _target_: str = "src.data.datamodule.CocoDataModule"
    root: str = MISSING
    train_split: str = "train2017"
    val_split: str = "val2017"
    test_split: str | None = None
    batch_size: int = 2
    val_batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    max_images: int | None = None
    skip_images: int = 0
    filter_empty: bool = True
    on_bad_image: BadImageMode = RAISE
    hflip_prob: float = 0.5
    scale_jitter: list[float] | None = None
    aspect_grouping: bool = True
    cache_dir: str | None = None
    seed: int = 0
    synthetic: SyntheticConfig | None = None  # set: generated before the datamodule is built
    proposals: ProposalFiles = field(default_factory=ProposalFiles)


@dataclass
class TrainerConfig:
    """``conf/trainer/``: ``pytorch_lightning.Trainer`` arguments, typed; defaults are Lightning's
    (a test checks). Others can still be added with ``+trainer.NAME=VALUE``."""

    _target_: str = "pytorch_lightning.Trainer"
    default_root_dir: str | None = None
    accelerator: str = "auto"
    strategy: str = "auto"
    devices: Any = "auto"  # an int, a list of ids, or "auto"
    num_nodes: int = 1
    precision: str | None = None
    logger: Any = None
    fast_dev_run: Any = False  # a bool or a number of batches
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: str | None = None
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    limit_test_batches: float | None = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None  # true, false or "warn"
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: str | None = None
    detect_anomaly: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0


@dataclass
class PathsConfig:
    """``conf/paths/``: where data and outputs go."""

    root_dir: str = MISSING
    data_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING
    coco_dir: str = MISSING


@dataclass
class TrainConfig:
    """``conf/train.yaml``: one training job (``python -m src.train``)."""

    task_name: str = "train"
    run_name: str = MISSING
    tags: list[str] = field(default_factory=list)
    seed: int = 0
    train: bool = True
    test: bool = True
    ckpt_path: str | None = None
    proposal_recall: bool = True
    optimized_metric: str | None = None  # what main returns to a sweeper; None: the monitor
    paths: PathsConfig = field(default_factory=PathsConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FpnConfig = field(default_factory=FpnConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: dict[str, Any] | None = None
    callbacks: dict[str, Any] | None = None


@dataclass
class EvalConfig:
    """``conf/eval.yaml``: metrics of a checkpoint on a split (``python -m src.eval``)."""

    task_name: str = "eval"
    seed: int = 0
    ckpt_path: str = MISSING
    split: str | None = None
    results_file: str = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # the data config's image scale; the model itself is rebuilt from the checkpoint
    model: dict[str, Any] | None = None


@dataclass
class PredictConfig:
    """``conf/predict.yaml``: boxes drawn on images (``python -m src.predict``)."""

    task_name: str = "predict"
    ckpt_path: str = MISSING
    input: str = MISSING
    output_dir: str = MISSING
    score_threshold: float = 0.5
    device: str = "cpu"
    precision: str = "32-true"  # or bf16-mixed (autocast), as trainer.precision
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class ProposalsConfig:
    """``conf/proposals.yaml``: one split's RPN proposals to a file (``python -m src.proposals``)."""

    task_name: str = "proposals"
    seed: int = 0
    ckpt_path: str = MISSING
    split: str = MISSING
    per_image: int | None = None
    output: str = MISSING
    batch_size: int = 1
    device: str = "cpu"
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] | None = None


def register_configs() -> None:
    """Register the schemas; each primary config names its own first in its defaults list."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="eval_schema", node=EvalConfig)
    store.store(name="predict_schema", node=PredictConfig)
    store.store(name="proposals_schema", node=ProposalsConfig)


register_configs()
# ${monitor:} in conf/: the one metric that checkpointing and sweeps select on
# (per task: the rpn task has no detections, it selects on proposal recall)
OmegaConf.register_new_resolver(
    "monitor", lambda task="faster_rcnn": monitor_for(str(task)), replace=True
)


# ---- what a type cannot say ---------------------------------------------------------------
_DETECTOR_KEYS = {"variant": "model.variant", "lateral": "fpn.lateral",
                  "top_down": "fpn.top_down", "levels": "fpn.levels"}  # fmt: skip


def _named(error: ValueError, keys: dict[str, str]) -> ConfigError:
    """The constructor's message with its argument names spelled as config keys."""
    message = str(error)
    for name, key in keys.items():
        message = re.sub(rf"(?<![\w.]){name}(?==)", key, message)
    return ConfigError(message)


def _at_least(key: str, value: Any, minimum: float) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{key}={value!r} is not allowed: use a number >= {minimum}")


def resolve_detector(cfg: DictConfig) -> VariantSpec:
    """The variant that ``model.variant`` and the ``fpn`` switches make; ConfigError names the key.

    Called once per job, before anything is built; the spec it returns is what the built model
    carries, what ``results.json`` records, and what a resumed checkpoint must match.
    """
    try:
        return resolve_variant(
            str(cfg.model.variant),
            lateral=cfg.fpn.lateral,
            top_down=cfg.fpn.top_down,
            levels=None if cfg.fpn.levels is None else [str(lv) for lv in cfg.fpn.levels],
        )
    except ValueError as error:
        raise _named(error, _DETECTOR_KEYS) from None


def check(cfg: DictConfig) -> VariantSpec:
    """Raise ConfigError for a well-typed value the framework cannot use; returns the variant.

    Uses the constructors' own rules (``check_backbone_options``, ``resolve_variant``), so each
    rule is written once; nothing is built here.
    """
    spec = resolve_detector(cfg)
    b = cfg.backbone
    try:
        check_backbone_options(
            str(b.name),
            trainable_layers=b.trainable_layers,
            norm=str(b.norm),
            widths=b.widths,
            weights=b.weights,
            pretrained_path=b.pretrained_path,
        )
    except ValueError as error:
        names = ("trainable_layers", "norm", "widths", "weights", "pretrained_path", "backbone")
        keys = {k: f"backbone.{k}" for k in names}
        raise _named(error, keys | {"backbone": "backbone.name"}) from None
    _at_least("fpn.out_channels", cfg.fpn.out_channels, 1)
    _at_least("model.anchor_scale", cfg.model.anchor_scale, 1e-6)
    _at_least("model.min_size", cfg.model.min_size, 1)
    _at_least("optim.lr", cfg.optim.lr, 0)
    for key in ("base_lr", "momentum", "weight_decay", "norm_weight_decay", "bias_weight_decay",
                "warmup_steps"):  # fmt: skip
        _at_least(f"optim.{key}", cfg.optim[key], 0)
    _at_least("data.batch_size", cfg.data.batch_size, 1)
    _check_task(cfg)
    return spec


def _check_task(cfg: DictConfig) -> None:
    task = str(cfg.model.task)
    if cfg.model.get("rpn_detach_features") and task != "faster_rcnn":
        raise ConfigError(
            f"model.rpn_detach_features=true is not allowed with model.task={task}: only with "
            "model.task=faster_rcnn (with rpn nothing would train the features; fast_rcnn has "
            "no RPN)"
        )
    given = {k: v for k, v in cfg.data.proposals.items() if v is not None}
    if task != "fast_rcnn":
        if given:
            raise ConfigError(
                f"data.proposals.{next(iter(given))} is set but model.task={task} computes its "
                "own proposals: use model.task=fast_rcnn, or leave data.proposals null"
            )
        return
    needed = (["train"] if cfg.get("train", True) else []) + ["val"]
    missing = [f"data.proposals.{k}" for k in needed if k not in given]
    if missing:
        raise ConfigError(
            f"model.task=fast_rcnn trains and evaluates on fixed proposals: set {', '.join(missing)} "
            "(files written by python -m src.proposals ckpt_path=<an rpn checkpoint> split=...)"
        )
    for role, path in given.items():
        if not Path(path).is_file():
            raise ConfigError(f"data.proposals.{role}={path!r}: no such file")


def detector_kwargs(cfg: DictConfig, spec: VariantSpec) -> dict[str, Any]:
    """``build_detector`` keyword arguments (all but num_classes): the resolved variant and its
    switches, then ``backbone.*``, ``fpn.out_channels`` and ``model.*``, each key from one group."""
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True, enum_to_str=True)
    model = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    kwargs: dict[str, Any] = {
        "variant": spec.name if spec.paper_row else str(cfg.model.variant),
        "backbone": backbone.pop("name"),
        "lateral": spec.lateral,
        "top_down": spec.top_down,
        "levels": list(spec.levels) if spec.head == "fpn" else None,
    }
    model.pop("variant")
    parts = [backbone, {"out_channels": cfg.fpn.out_channels}, model]
    for part in parts:
        clash = set(kwargs) & set(part)
        assert not clash, f"detector keys set by two groups: {clash}"
        kwargs |= part
    return kwargs


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The datamodule of ``cfg.data``; a synthetic dataset is generated first where allowed.

    Raises:
        ConfigError: ``data.root`` holds no synthetic dataset and generating one there was not
            asked for (a typo would otherwise fill a new folder with a new dataset).
    """
    data = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
    synthetic = data.pop("synthetic", None)
    if synthetic is not None:
        from src.data.synthetic import ensure_synthetic, is_synthetic_dataset

        generate, home = synthetic.pop("generate"), synthetic.pop("default_root")
        root = Path(data["root"])
        if generate is None:
            generate = root.resolve() == Path(home).resolve()
        if generate:
            ensure_synthetic(root, progress=True, **synthetic)
        elif not is_synthetic_dataset(root):
            raise ConfigError(
                f"data.root={str(root)!r} holds no synthetic dataset "
                f"({'no such folder' if not root.exists() else 'no complete dataset there'}); "
                f"it is made on first use only at its default place {home!r}: check the path, "
                "or add data.synthetic.generate=true to make one there"
            )
    return hydra.utils.instantiate(data, _convert_="all")
