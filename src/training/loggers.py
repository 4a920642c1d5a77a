"""Experiment loggers from the config: CSV always, W&B offline by itself when no key is set."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger


def wandb_has_credentials() -> bool:
    """True when W&B could log online without asking: an API key in the env or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        hosts = netrc.netrc(str(path)).hosts if path.is_file() else {}
    except (netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def build_loggers(cfg: DictConfig | None, output_dir: str, group: str | None) -> list[Logger]:
    """Instantiate every logger under ``cfg`` (the ``logger`` group), plus CSV if missing.

    A W&B logger with ``offline: null`` goes offline when no credentials are configured
    (``wandb sync`` uploads later); ``group: null`` becomes ``group`` (the sweep's name).
    """
    loggers: list[Logger] = []
    for node in (cfg or {}).values():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        node = OmegaConf.to_container(node, resolve=True)
        if node["_target_"].endswith("WandbLogger"):
            if node.get("offline") is None:
                node["offline"] = (
                    os.environ.get("WANDB_MODE") == "offline" or not wandb_has_credentials()
                )
            if node.get("group") is None and group:
                node["group"] = group
            # never prompt for a login or block on the network
            os.environ.setdefault("WANDB_SILENT", "true")
            Path(node.get("save_dir", output_dir)).mkdir(parents=True, exist_ok=True)
        loggers.append(hydra.utils.instantiate(node, _convert_="all"))
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.insert(0, CSVLogger(output_dir, name="csv", version=""))
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close the W&B run so that the next job of a multirun starts a run of its own."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()
