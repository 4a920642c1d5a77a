"""Bottom-up pathways: derived channels/strides, norms, freezing and pretrained files."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from src.models.backbones import SIMPLE_WIDTHS, BottomUp, build_backbone, gn_groups


def test_resnet18_channels_and_strides_are_measured():
    body = build_backbone("resnet18")
    assert body.out_channels == {"c2": 64, "c3": 128, "c4": 256, "c5": 512}
    assert body.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
    out = body(torch.rand(2, 3, 64, 96))
    assert list(out) == ["c2", "c3", "c4", "c5"]
    assert [tuple(v.shape) for v in out.values()] == [
        (2, 64, 16, 24),
        (2, 128, 8, 12),
        (2, 256, 4, 6),
        (2, 512, 2, 3),
    ]


def test_resnet50_channels_are_measured():
    body = build_backbone("resnet50", levels=("c4", "c5"))
    assert body.out_channels == {"c4": 1024, "c5": 2048}
    assert body.strides == {"c4": 16, "c5": 32}


def test_only_stages_up_to_the_highest_level_are_built():
    body = build_backbone("resnet18", levels=("c3",))
    assert [name for name, _ in body.named_children()] == ["stem", "c2", "c3"]
    assert list(body(torch.rand(1, 3, 37, 53))) == ["c3"]


def test_odd_input_sizes_round_up_like_the_convolutions():
    out = build_backbone("simple")(torch.rand(1, 3, 37, 53))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(10, 14), (5, 7), (3, 4), (2, 2)]


@pytest.mark.parametrize("widths", [None, (8, 12, 16, 24, 40)])
def test_simple_backbone_widths(widths):
    body = build_backbone("simple", widths=widths)
    expect = widths or SIMPLE_WIDTHS
    assert body.out_channels == dict(zip(("c2", "c3", "c4", "c5"), expect[1:]))
    assert body.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
    # one stride-2 conv per block, every conv 3x3 followed by a norm and a ReLU
    convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sorted(c.stride[0] for c in convs) == [1] * 5 + [2] * 5


def test_group_norm_groups():
    assert [gn_groups(c) for c in (64, 256, 24, 48, 96, 7)] == [32, 32, 24, 24, 32, 7]
    body = build_backbone("simple", widths=(24, 48, 96, 64, 40), norm="gn")
    groups = [m.num_groups for m in body.modules() if isinstance(m, nn.GroupNorm)]
    assert groups == [24, 24, 24, 24, 32, 32, 32, 32, 20, 20]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())


def test_frozen_and_sync_batch_norm():
    frozen = build_backbone("resnet18", norm="frozen_bn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == 20
    sync = build_backbone("simple", norm="sync_bn")
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in sync.modules()) == 10
    # outside DDP SyncBatchNorm computes plain BatchNorm, so CPU runs still work
    assert sync.train()(torch.rand(2, 3, 64, 64))["c5"].shape == (2, 512, 2, 2)


@pytest.mark.parametrize("trainable", [0, 1, 2, 3, 4, 5])
def test_trainable_layers_follow_torchvision(trainable):
    ours = build_backbone("resnet18", trainable_layers=trainable)
    reference = _resnet_fpn_extractor(torchvision.models.resnet18(), trainable).body
    to_tv = {"stem.conv1": "conv1", "stem.bn1": "bn1"} | {
        f"c{k + 1}": f"layer{k}" for k in (1, 2, 3, 4)
    }

    def torchvision_name(name):
        for ours_prefix, tv_prefix in to_tv.items():
            if name.startswith(ours_prefix + "."):
                return tv_prefix + name[len(ours_prefix) :]
        raise AssertionError(name)

    got = {torchvision_name(n) for n, p in ours.named_parameters() if p.requires_grad}
    want = {n for n, p in reference.named_parameters() if p.requires_grad}
    assert got == want
    assert len(got) > 0 if trainable else not got


def test_trainable_layers_default_depends_on_pretrained(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    assert all(p.requires_grad for p in build_backbone("resnet18").parameters())
    pretrained = build_backbone("resnet18", pretrained_path=path)
    trainable = {n.split(".")[0] for n, p in pretrained.named_parameters() if p.requires_grad}
    assert trainable == {"c3", "c4", "c5"}


@pytest.fixture(scope="module")
def resnet18_file(module_tmp):
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    path = module_tmp("weights") / "resnet18-test.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_pretrained_file_gives_torchvision_features(resnet18_file):
    net, path = resnet18_file
    ours = build_backbone("resnet18", pretrained_path=path).eval()
    reference = IntermediateLayerGetter(
        net, {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
    ).eval()
    x = torch.rand(1, 3, 67, 45)
    with torch.no_grad():
        a, b = ours(x), reference(x)
    assert list(a) == list(b)
    for level in a:
        torch.testing.assert_close(a[level], b[level], rtol=0, atol=0)


def test_pretrained_file_for_lower_levels_ignores_the_rest(resnet18_file):
    _, path = resnet18_file
    body = build_backbone("resnet18", levels=("c2",), pretrained_path=path, norm="frozen_bn")
    assert list(body(torch.rand(1, 3, 32, 32))) == ["c2"]


def test_missing_pretrained_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "resnet50.pth"
    with pytest.raises(ValueError, match=r"nope/resnet50\.pth"):
        build_backbone("resnet50", pretrained_path=path)
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet50", pretrained_path=str(path))


def test_mismatched_pretrained_keys_are_named(resnet18_file, tmp_path):
    _, path = resnet18_file
    with pytest.raises(ValueError, match=r"resnet18-test\.pth.*missing keys: c2\.2\."):
        build_backbone("resnet34", pretrained_path=path)
    state = torch.load(path, weights_only=True) | {"extra.weight": torch.zeros(1)}
    bad = tmp_path / "extra.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected keys: extra\.weight"):
        build_backbone("resnet18", pretrained_path=bad)
    with pytest.raises(ValueError, match=r"resnet18-test\.pth.*does not"):
        build_backbone("resnet18", pretrained_path=path, norm="gn")


def test_simple_backbone_loads_its_own_state_dict(tmp_path):
    torch.manual_seed(1)
    first = build_backbone("simple", widths=(8, 8, 16, 16, 32))
    path = tmp_path / "simple.pth"
    torch.save(first.state_dict(), path)
    second = build_backbone("simple", widths=(8, 8, 16, 16, 32), pretrained_path=path)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match=r"simple\.pth.*does not fit"):
        build_backbone("simple", pretrained_path=path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "resnet152"}, "resnet152.*resnet18, resnet34, resnet50, resnet101, simple"),
        ({"name": "resnet18", "norm": "ln"}, "norm='ln'.*bn, frozen_bn, gn, sync_bn"),
        ({"name": "resnet18", "trainable_layers": 6}, "trainable_layers=6.*0..5"),
        ({"name": "resnet18", "trainable_layers": -1}, "trainable_layers=-1.*0..5"),
        ({"name": "resnet18", "widths": (8, 8, 8, 8, 8)}, "only backbone='simple' takes widths"),
        ({"name": "simple", "widths": (8, 8)}, "5 positive ints"),
        ({"name": "simple", "levels": ("c6",)}, "c6"),
    ],
)
def test_user_errors_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(**kwargs)


def test_bottom_up_rejects_levels_it_lacks():
    stages = dict(build_backbone("simple", levels=("c2",)).named_children())
    with pytest.raises(ValueError, match="c3"):
        BottomUp(stages, ("c3",))
    stages = dict(build_backbone("simple", levels=("c3",)).named_children())
    with pytest.raises(ValueError, match="beyond the highest level 'c2'"):
        BottomUp(stages, ("c2",))
