"""W&B with a key but no usable server: the run falls back to offline in seconds, not 90."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb
from omegaconf import OmegaConf
from pytorch_lightning.loggers import WandbLogger

from src.training import loggers as loggers_mod
from src.training.loggers import build_loggers

FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 characters, like a real key
BOUND_S = 20.0  # far below wandb's 90 s default init_timeout


def free_port() -> int:
    """A loopback port on which nothing listens (bound, read, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Rejecting(http.server.BaseHTTPRequestHandler):
    """Answers every request with 401, as W&B does for a bad key; counts the requests."""

    requests = 0

    def _reject(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"errors": ["invalid api key"]}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _reject

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def rejecting_server() -> Iterator[type[_Rejecting]]:
    handler = type("Handler", (_Rejecting,), {"requests": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A fake key, only loopback traffic, a fresh wandb session; the run finished afterwards."""
    env = {
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),  # no user settings file
        "NETRC": str(tmp_path / "no_netrc"),
        "WANDB_SILENT": "true",
        # nothing may leave loopback: no error reports, no system probes (cloud metadata)
        "WANDB_ERROR_REPORTING": "false",
        "WANDB__DISABLE_STATS": "true",
        "WANDB__DISABLE_META": "true",
        "WANDB__STATS_COREWEAVE_METADATA_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    # set then unset, so that the WANDB_MODE WandbLogger writes is undone afterwards too
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_MODE")
    wandb.teardown()  # wandb reads the environment once per session
    yield
    wandb.finish()
    wandb.teardown()


def wandb_cfg(save_dir: Path):
    return OmegaConf.create(
        {
            "wandb": {
                "_target_": "pytorch_lightning.loggers.WandbLogger",
                "project": "fpn",
                "save_dir": str(save_dir),
                "offline": None,
                "group": None,
                "name": "t",
            }
        }
    )


def build_timed(save_dir: Path) -> tuple[WandbLogger, float]:
    start = time.monotonic()
    loggers = build_loggers(wandb_cfg(save_dir), str(save_dir), None)
    elapsed = time.monotonic() - start
    (logger,) = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    return logger, elapsed


def assert_offline_fallback(
    logger: WandbLogger, elapsed: float, caplog: pytest.LogCaptureFixture, save_dir: Path
) -> None:
    """Offline within the bound, one warning with `wandb sync <folder>`, and logging works."""
    assert elapsed < BOUND_S, f"fallback took {elapsed:.1f} s"
    assert logger.experiment.offline
    warnings = [r for r in caplog.records if r.name == loggers_mod.__name__]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING, caplog.text
    message = warnings[0].getMessage()
    assert "\n" not in message
    folder = Path(message.split("wandb sync ", 1)[1])
    assert folder.parent == save_dir / "wandb" and folder.name.startswith("offline-run-")
    logger.log_metrics({"loss": 1.0}, step=0)
    wandb.finish()
    assert list(folder.glob("*.wandb")), sorted(p.name for p in folder.iterdir())


@pytest.mark.usefixtures("wandb_env")
def test_unreachable_server_falls_back_offline(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=loggers_mod.__name__)
    logger, elapsed = build_timed(tmp_path)
    print(f"unreachable: offline after {elapsed:.2f} s")
    assert_offline_fallback(logger, elapsed, caplog, tmp_path)
    assert "no connection to 127.0.0.1" in caplog.text


@pytest.mark.usefixtures("wandb_env")
def test_rejected_key_falls_back_offline(tmp_path, caplog, monkeypatch, rejecting_server):
    monkeypatch.setenv("WANDB_BASE_URL", rejecting_server.url)
    caplog.set_level(logging.WARNING, logger=loggers_mod.__name__)
    logger, elapsed = build_timed(tmp_path)
    print(f"rejected: offline after {elapsed:.2f} s")
    assert rejecting_server.requests > 0  # the key was tried, not skipped by the probe
    assert_offline_fallback(logger, elapsed, caplog, tmp_path)
    assert "invalid api key" in caplog.text


@pytest.mark.usefixtures("wandb_env")
def test_silent_server_is_bounded_by_init_timeout(tmp_path, caplog, monkeypatch):
    """A server that takes the connection but never answers costs init_timeout, not 90 s."""
    monkeypatch.setattr(loggers_mod, "INIT_TIMEOUT_S", 2.0)
    with socket.socket() as server:  # listens (the kernel accepts) but never replies
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        caplog.set_level(logging.WARNING, logger=loggers_mod.__name__)
        logger, elapsed = build_timed(tmp_path)
    print(f"silent: offline after {elapsed:.2f} s")
    assert_offline_fallback(logger, elapsed, caplog, tmp_path)
    assert "CommError" in caplog.text


@pytest.mark.usefixtures("wandb_env")
def test_no_key_stays_offline_silently(tmp_path, caplog, monkeypatch, rejecting_server):
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_BASE_URL", rejecting_server.url)
    caplog.set_level(logging.DEBUG, logger=loggers_mod.__name__)
    logger, elapsed = build_timed(tmp_path)
    assert elapsed < BOUND_S
    assert logger._offline and logger._experiment is None  # as before: the run starts later
    assert not [r for r in caplog.records if r.name == loggers_mod.__name__]
    logger.log_metrics({"loss": 1.0}, step=0)
    assert logger.experiment.offline
    wandb.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    assert rejecting_server.requests == 0
