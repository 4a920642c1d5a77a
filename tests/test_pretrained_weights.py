"""``backbone.weights=IMAGENET1K_V1``: torchvision's weights by name, through torchvision's own
download (served from 127.0.0.1 here) and cache in ``$TORCH_HOME/hub/checkpoints``."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision
from run_helpers import compose_train
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from src.models.backbones import (
    WeightsDownloadError,
    _our_key,
    build_backbone,
    resolve_weights,
)
from src.models.detector import build_detector
from src.training.config import ConfigError, check, detector_kwargs


@pytest.fixture(scope="module")
def resnet18_bytes() -> tuple[dict, bytes]:
    """A stand-in for torchvision's resnet18 file: same keys and shapes, other values."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    state = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # no torch.hub.set_dir() from elsewhere
    return home


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """Serves ``tmp_path/served`` on 127.0.0.1; yields (folder, base url)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    folder = tmp_path / "served"
    folder.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _assert_loaded(body, state: dict) -> None:
    ours = body.state_dict()
    compared = 0
    for key, value in state.items():
        new = _our_key(key)
        if new is None or new not in ours:
            continue
        assert torch.equal(ours[new], value), key
        compared += 1
    assert compared >= 60  # at least stem, c2 and c3


def _trainable(body) -> set[str]:
    return {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}


def test_download_runs_torchvisions_code_into_torch_home(
    resnet18_bytes, torch_home, file_server, monkeypatch
):
    state, data = resnet18_bytes
    folder, base = file_server
    # torchvision's file names carry the sha256 prefix that the download checks
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (folder / name).write_bytes(data)
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{base}/{name}")
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    body = build_backbone("resnet18", weights="IMAGENET1K_V1")
    cached = torch_home / "hub" / "checkpoints" / name
    assert cached.read_bytes() == data
    assert loads == [True]  # torch.hub's load of the cached file, with weights_only=True
    _assert_loaded(body, state)
    assert _trainable(body) == {"c3", "c4", "c5"}  # 3 trainable stages with pretrained weights
    # the second time it is the cache: nothing is served any more
    (folder / name).unlink()
    _assert_loaded(build_backbone("resnet18", weights="DEFAULT"), state)


def test_a_cached_file_is_used_without_network(resnet18_bytes, torch_home, no_network):
    state, data = resnet18_bytes
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    # the exact name torchvision expects: the basename of the enum's URL
    (cache / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)).write_bytes(data)
    for name in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        body = build_backbone("resnet18", weights=name, levels=("c2", "c3"), trainable_layers=5)
        _assert_loaded(body, state)
        assert _trainable(body) == {"stem", "c2", "c3"}
    model = build_detector("fpn", "resnet18", 3, weights="IMAGENET1K_V1")  # passed through
    _assert_loaded(model.backbone.body, state)


def test_a_download_with_the_wrong_hash_is_refused(
    resnet18_bytes, torch_home, file_server, monkeypatch
):
    _, data = resnet18_bytes
    folder, base = file_server
    name = "resnet18-00000000.pth"
    (folder / name).write_bytes(data)
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{base}/{name}")
    with pytest.raises(WeightsDownloadError, match=r"invalid hash value") as info:
        build_backbone("resnet18", weights="IMAGENET1K_V1")
    assert f"{base}/{name}" in str(info.value) and "by hand" in str(info.value)
    assert not (torch_home / "hub" / "checkpoints" / name).exists()


def test_no_network_names_the_url_and_the_cache_file(torch_home, monkeypatch, tmp_path):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # port 9: nothing listens
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", url)
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsDownloadError) as info:
        build_backbone("resnet18", weights="IMAGENET1K_V1")
    message = str(info.value)
    assert url in message and str(cached) in message and "pretrained_path" in message


def test_weights_names_resolve_against_the_chosen_resnet():
    assert resolve_weights("resnet18", "IMAGENET1K_V1") is ResNet18_Weights.IMAGENET1K_V1
    assert resolve_weights("resnet50", "IMAGENET1K_V2") is ResNet50_Weights.IMAGENET1K_V2
    assert resolve_weights("resnet50", "DEFAULT") is ResNet50_Weights.DEFAULT


@pytest.mark.parametrize(
    "name, weights, match",
    [
        ("resnet18", "IMAGENET1K_V2", r"weights='IMAGENET1K_V2' .* choose one of IMAGENET1K_V1, DEFAULT"),
        ("resnet50", "imagenet", r"choose one of IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"),
        ("resnet18", "ResNet50_Weights.IMAGENET1K_V1", r"ResNet18_Weights\.<name>"),
        ("simple", "IMAGENET1K_V1", r"backbone='simple': it has no published weights"),
    ],
)  # fmt: skip
def test_unknown_weights_are_refused_listing_the_allowed(name, weights, match, no_network):
    with pytest.raises(ValueError, match=match):
        build_backbone(name, weights=weights)


def test_weights_and_pretrained_path_together_are_refused(tmp_path, no_network):
    with pytest.raises(ValueError, match=r"weights='IMAGENET1K_V1' and pretrained_path=.* both"):
        build_backbone("resnet18", weights="IMAGENET1K_V1", pretrained_path=tmp_path / "r.pth")


def test_config_errors_name_backbone_weights(tmp_path, no_network):
    cfg = compose_train(["backbone.weights=IMAGENET1K_V9"], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"backbone\.weights='IMAGENET1K_V9' is not allowed "
                       r"with backbone\.name='resnet18': choose one of IMAGENET1K_V1, DEFAULT"):  # fmt: skip
        check(cfg)
    both = compose_train(
        ["backbone.weights=IMAGENET1K_V1", "backbone.pretrained_path=/x/r18.pth"],
        tmp_path,
        tmp_path,
    )
    with pytest.raises(ConfigError, match=r"backbone\.weights=.* and backbone\.pretrained_path="):
        check(both)
    simple = compose_train(["backbone=simple", "backbone.weights=DEFAULT"], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"backbone\.name='simple': it has no published"):
        check(simple)
    good = compose_train(["backbone.weights=IMAGENET1K_V1"], tmp_path, tmp_path)
    assert detector_kwargs(good, check(good))["weights"] == "IMAGENET1K_V1"
