"""Checks a composed config before anything is built, and turns it into constructor arguments."""

from __future__ import annotations

import numbers
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from src.models.backbones import BACKBONES, NORMS
from src.models.detector import VARIANTS
from src.models.fpn import PYRAMID_LEVELS


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key and the allowed values."""


def _bool_or_null(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not allowed: use true, false or null")


def _choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")


def _number(key: str, value: Any, *, minimum=None, integer=False, nullable=False) -> None:
    if value is None and nullable:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, numbers.Integral if integer else numbers.Real)
    if not ok or isinstance(value, bool) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        null = " or null" if nullable else ""
        raise ConfigError(f"{key}={value!r} is not allowed: use {kind}{bound}{null}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for a value the framework cannot use, before any model or data exists."""
    b, f, m, o = cfg.backbone, cfg.fpn, cfg.model, cfg.optim
    _choice("backbone.name", b.name, BACKBONES)
    _choice("backbone.norm", b.norm, NORMS)
    if b.trainable_layers is not None and b.trainable_layers not in range(6):
        raise ConfigError(
            f"backbone.trainable_layers={b.trainable_layers!r} is not allowed: use 0..5 or null"
        )
    _bool_or_null("fpn.lateral", f.lateral)
    _bool_or_null("fpn.top_down", f.top_down)
    if f.levels is not None:
        levels = list(f.levels) if OmegaConf.is_list(f.levels) else [f.levels]
        bad = [lv for lv in levels if lv not in PYRAMID_LEVELS]
        if bad or not levels:
            raise ConfigError(
                f"fpn.levels={levels!r} is not allowed: a non-empty list of {', '.join(PYRAMID_LEVELS)}"
            )
    _number("fpn.out_channels", f.out_channels, minimum=1, integer=True)
    _choice("model.variant", m.variant, VARIANTS)
    _number("model.anchor_scale", m.anchor_scale, minimum=1e-6)
    _number("optim.lr", o.lr, minimum=0, nullable=True)
    for key in ("base_lr", "momentum", "weight_decay", "norm_weight_decay", "bias_weight_decay"):
        _number(f"optim.{key}", o[key], minimum=0)
    _number("optim.warmup_steps", o.warmup_steps, minimum=0, integer=True)
    _number("data.batch_size", cfg.data.batch_size, minimum=1, integer=True)


def detector_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``build_detector`` keyword arguments (all but num_classes) from backbone/, fpn/, model/."""
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    fpn = OmegaConf.to_container(cfg.fpn, resolve=True)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs = {"variant": model.pop("variant"), "backbone": backbone.pop("name")}
    if fpn.get("levels") is not None and not isinstance(fpn["levels"], list):
        fpn["levels"] = [fpn["levels"]]
    return kwargs | backbone | fpn | model


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The datamodule of ``cfg.data``; a synthetic dataset is generated first if missing."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    synthetic = data.pop("synthetic", None)
    if synthetic is not None:
        from src.data.synthetic import ensure_synthetic

        ensure_synthetic(data["root"], progress=True, **synthetic)
    return hydra.utils.instantiate(data, _convert_="all")
