"""Experiment loggers from the config: CSV always, W&B offline by itself when no key is set
or when the server cannot be reached or rejects the key."""

from __future__ import annotations

import logging
import netrc
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from src.training.history import ResumableCSVLogger

log = logging.getLogger(__name__)

# Seconds to wait for a TCP connection to the W&B server before going offline.
PROBE_TIMEOUT_S = 3.0
# wandb.init's own limit (default 90 s) once the server answers TCP: a slow or broken server
# costs this much, not a failed job; WANDB_INIT_TIMEOUT or `settings.init_timeout` win.
INIT_TIMEOUT_S = 10.0


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
    One that goes online starts its run here and falls back to offline, with one warning
    line, when the server is unreachable or rejects the key.
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
            if not node["offline"] and rank_zero_only.rank == 0:  # other ranks never log to W&B
                loggers.append(_online_wandb(node))
                continue
        loggers.append(hydra.utils.instantiate(node, _convert_="all"))
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.insert(0, ResumableCSVLogger(output_dir, name="csv", version=""))
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close the W&B run so that the next job of a multirun starts a run of its own."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def _online_wandb(node: dict[str, Any]) -> Logger:
    """Start the online W&B run now; offline instead when the server is unreachable or says no.

    Starting here, not at the first log call, means a failure costs seconds, not the job.
    """
    import wandb
    from wandb.errors import Error as WandbError

    reason = _unreachable(wandb.setup().settings)
    if reason is None:
        node = {**node, "settings": _with_init_timeout(node.get("settings"))}
        logger = hydra.utils.instantiate(node, _convert_="all")
        try:
            logger.experiment  # noqa: B018 (the property starts the run)
            return logger
        except (WandbError, TimeoutError) as err:  # timeout, rejected key, server error
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            if wandb.run is not None:
                wandb.finish()
    return _offline_wandb(node, reason)


def _offline_wandb(node: dict[str, Any], reason: str) -> Logger:
    """The W&B logger of ``node``, offline, with one warning line that says how to upload later."""
    # mode= as well: wandb ignores WANDB_MODE (which offline=True sets) once it is set up
    node = {**node, "offline": True, "mode": "offline", "log_model": False}
    logger = hydra.utils.instantiate(node, _convert_="all")
    folder = Path(logger.experiment.dir).parent  # start now to name the run folder
    log.warning(
        "W&B offline (%s); training goes on, upload later with: wandb sync %s", reason, folder
    )
    return logger


def _unreachable(settings: Any) -> str | None:
    """Why the W&B server at ``settings.base_url`` takes no TCP connection, or None if it does.

    Behind a proxy nothing is probed: ``init_timeout`` bounds that case.
    """
    url = urlsplit(settings.base_url)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return f"bad W&B base URL {settings.base_url!r}"
    proxy = getattr(settings, f"{url.scheme}_proxy", None) or getproxies().get(url.scheme)
    if proxy and not proxy_bypass(url.hostname or ""):
        return None
    outcome = [f"no answer within {PROBE_TIMEOUT_S:g} s"]  # what a hung probe leaves

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
            outcome[0] = ""
        except OSError as err:
            outcome[0] = str(err) or type(err).__name__

    # a thread, since the DNS lookup ignores the socket timeout
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    return f"no connection to {url.hostname}:{port}: {outcome[0]}" if outcome[0] else None


def _with_init_timeout(settings: Any) -> Any:
    """``settings`` for wandb.init with a short ``init_timeout`` unless one was chosen."""
    if settings is None:
        settings = {}
    if not isinstance(settings, dict) or "WANDB_INIT_TIMEOUT" in os.environ:
        return settings
    return {"init_timeout": INIT_TIMEOUT_S, **settings}
