"""Bottom-up pathways: torchvision ResNets and the course project's simple block net.

Every network is cut into five stages, ``stem, c2, c3, c4, c5``; ``c_k`` has stride ``2**k``.
A :class:`BottomUp` runs the stages it was built with and returns the requested levels as an
``OrderedDict`` (``{"c2": [B,C2,H/4,W/4], ..., "c5": [B,C5,H/32,W/32]}``; odd sizes round up).
Channels and strides are measured on the built network, never read from a table.

torchvision names map onto ours as ``conv1, bn1 -> stem.conv1, stem.bn1`` and
``layer{k} -> c{k+1}``, so a torchvision ``resnet*.pth`` file loads with ``pretrained_path``,
and torchvision's published ImageNet weights load by name with ``weights`` (e.g.
``IMAGENET1K_V1``), through torchvision's own download and cache (``$TORCH_HOME/hub/checkpoints``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum, get_model_weights
from torchvision.ops.misc import FrozenBatchNorm2d

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "simple")
NORMS = ("bn", "frozen_bn", "gn", "sync_bn")
STAGES = ("stem", "c2", "c3", "c4", "c5")
LEVELS = STAGES[1:]
SIMPLE_WIDTHS = (32, 64, 128, 256, 512)
# Stages counted from the top, as torchvision's trainable_layers counts layer4, layer3, ...
_TRAINABLE_ORDER = STAGES[::-1]


class PretrainedFileNotFoundError(FileNotFoundError, ValueError):
    """A ``pretrained_path`` that does not exist (catchable as either base class)."""


class WeightsDownloadError(OSError):
    """``weights`` named valid weights, but they could not be downloaded or read from the cache."""


def gn_groups(channels: int) -> int:
    """GroupNorm groups for ``channels``: 32 where it divides, else its largest divisor <= 32."""
    return max(g for g in range(1, 33) if channels % g == 0)


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """``channels -> module`` for a name in NORMS (sync_bn builds BatchNorm2d, converted later)."""
    if norm in ("bn", "sync_bn"):
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(gn_groups(channels), channels)
    raise ValueError(f"norm={norm!r} is not allowed: choose one of {', '.join(NORMS)}")


class BottomUp(nn.Module):
    """Runs ``stem, c2, ...`` in order and returns the feature maps named in ``levels``.

    Args:
        stages: stage name -> module, a prefix of ``STAGES`` in order, ending at the highest
            requested level (nothing is built that the levels do not use).
        levels: the levels to return, a subset of ``c2..c5`` present in ``stages``.

    Attributes:
        levels: the returned levels, finest first.
        out_channels: level -> channels, e.g. ``{"c4": 1024, "c5": 2048}`` for ResNet-50.
        strides: level -> stride in pixels, e.g. ``{"c4": 16, "c5": 32}``.
    """

    def __init__(self, stages: Mapping[str, nn.Module], levels: Sequence[str]) -> None:
        super().__init__()
        names = tuple(stages)
        if names != STAGES[: len(names)] or not names:
            raise ValueError(f"stages {names} must be a non-empty prefix of {STAGES}")
        bad = [lv for lv in levels if lv not in names or lv == "stem"]
        if bad or not levels:
            raise ValueError(f"levels {tuple(levels)} must be a non-empty subset of {names[1:]}")
        self.levels = tuple(sorted(set(levels), key=STAGES.index))
        if names[-1] != self.levels[-1]:
            # a stage above the last returned level would hold parameters without gradients
            raise ValueError(f"stages {names} go beyond the highest level {self.levels[-1]!r}")
        for name, module in stages.items():
            self.add_module(name, module)
        self.out_channels, self.strides = self._measure()

    @torch.no_grad()
    def _measure(self) -> tuple[dict[str, int], dict[str, int]]:
        # A dry run on a tiny input whose sides are a multiple of every stride.
        size = 2 ** (len(list(self.children())) + 1)
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = self.training
        self.eval()  # keeps BatchNorm running statistics untouched
        try:
            features = self(torch.zeros(1, 3, size, size, device=device))
        finally:
            self.train(was_training)
        channels = {k: int(v.shape[1]) for k, v in features.items()}
        strides = {k: size // int(v.shape[-1]) for k, v in features.items()}
        return channels, strides

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """x [B,3,H,W] -> OrderedDict level -> [B,C_level,H_level,W_level], finest first."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, stage in self.named_children():
            x = stage(x)
            if name in self.levels:
                out[name] = x
        return out


def _resnet_stages(name: str, norm: Callable[[int], nn.Module]) -> OrderedDict[str, nn.Module]:
    net = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
    stem = nn.Sequential(
        OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool)
    )
    layers = (net.layer1, net.layer2, net.layer3, net.layer4)
    return OrderedDict([("stem", stem), *zip(LEVELS, layers)])


def _conv_norm_relu(cin: int, cout: int, stride: int, norm: Callable[[int], nn.Module]):
    conv = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(OrderedDict(conv=conv, norm=norm(cout), relu=nn.ReLU(inplace=True)))


def _simple_stages(
    widths: Sequence[int], norm: Callable[[int], nn.Module]
) -> OrderedDict[str, nn.Module]:
    # One block per stage: a stride-2 3x3 conv, then a stride-1 3x3 conv, each conv-norm-ReLU.
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    cin = 3
    for name, width in zip(STAGES, widths):
        stages[name] = nn.Sequential(
            _conv_norm_relu(cin, width, 2, norm), _conv_norm_relu(width, width, 1, norm)
        )
        cin = width
    return stages


def _our_key(key: str) -> str | None:
    """torchvision ResNet key -> our stage key (ours pass through); None for the classifier."""
    head, _, rest = key.partition(".")
    if head == "fc":
        return None
    if head in ("conv1", "bn1"):
        return f"stem.{key}"
    if head in ("layer1", "layer2", "layer3", "layer4"):
        return f"c{int(head[-1]) + 1}.{rest}"
    return key


def _few(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(list(keys)[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_pretrained(stages: Mapping[str, nn.Module], path: str | os.PathLike) -> None:
    """Load a torchvision-format state dict from ``path`` into ``stages`` in place.

    Keys of stages that were not built (e.g. ``layer4`` when only ``c2..c4`` exist) and the
    classifier (``fc.*``) are ignored; any other missing or unexpected key is an error.

    Raises:
        PretrainedFileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a state dict, or keys or shapes do not match.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PretrainedFileNotFoundError(f"pretrained_path={path!r}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or pickled objects beyond tensors
        raise ValueError(f"pretrained_path={path!r} cannot be read as a state dict: {err}") from err
    _load_state(stages, state, f"pretrained_path={path!r}")


def _load_state(stages: Mapping[str, nn.Module], state: object, source: str) -> None:
    """Load torchvision-format ``state`` into ``stages``; ``source`` names it in errors."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} holds a {type(state).__name__}, not a state dict")
    built = set(stages)
    ours = {}
    for key, value in state.items():
        new = _our_key(key)
        if new is not None and (
            new.partition(".")[0] in built or new.partition(".")[0] not in STAGES
        ):
            ours[new] = value
    target = nn.ModuleDict(stages)
    try:
        result = target.load_state_dict(ours, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{source} does not fit the network: {err}") from None
    # A file saved from FrozenBatchNorm2d has no batch counter; BatchNorm2d does not need it.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if result.unexpected_keys:
            parts.append(f"unexpected keys: {_few(result.unexpected_keys)}")
        raise ValueError(f"{source} does not match the network; " + "; ".join(parts))


def resolve_weights(name: str, weights: str) -> WeightsEnum:
    """torchvision's weights enum member for backbone ``name``.

    ``weights`` is a member name of the ResNet's enum (``IMAGENET1K_V1``, ``IMAGENET1K_V2``
    where published, ``DEFAULT``) or its full name (``ResNet50_Weights.IMAGENET1K_V2``).

    Raises:
        ValueError: ``simple`` (no published weights), or a name the enum lacks; the message
            lists the allowed names.
    """
    if name == "simple":
        raise ValueError(
            f"weights={weights!r} is not allowed with backbone='simple': it has no published "
            "weights; use pretrained_path for a state dict of your own"
        )
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is not allowed: choose one of {', '.join(BACKBONES)}")
    enum = get_model_weights(name)
    allowed = list(enum.__members__)
    short = weights
    if isinstance(weights, str) and "." in weights:
        prefix, _, short = weights.partition(".")
        if prefix != enum.__name__:
            short = None
    if not isinstance(short, str) or short not in enum.__members__:
        raise ValueError(
            f"weights={weights!r} is not allowed with backbone={name!r}: choose one of "
            f"{', '.join(allowed)} (or {enum.__name__}.<name>), or null for none"
        )
    return enum[short]


def load_weights(
    stages: Mapping[str, nn.Module], name: str, weights: str, *, progress: bool = True
) -> None:
    """Load torchvision's published ``weights`` for backbone ``name`` into ``stages`` in place.

    The file comes through torchvision's own cache: ``$TORCH_HOME/hub/checkpoints/<url basename>``
    (default ``~/.cache/torch``). It is downloaded only when missing there, and a download is
    refused unless its sha256 starts with the hash in the file name (``check_hash``). It is read
    with ``weights_only=True``. Keys map as for :func:`load_pretrained`.

    Raises:
        ValueError: unknown ``weights`` for ``name`` (see :func:`resolve_weights`).
        WeightsDownloadError: the download failed (no network, bad hash) or the cached file
            cannot be read; the message names the URL and the cache file.
    """
    member = resolve_weights(name, weights)
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    cached = os.path.join(cache_dir, os.path.basename(member.url))
    label = f"weights={weights!r} ({type(member).__name__}.{member.name})"
    try:
        state = member.get_state_dict(
            progress=progress, check_hash=True, weights_only=True, map_location="cpu"
        )
    except Exception as err:  # network, hash mismatch, or an unreadable cached file
        where = (
            f"the cached file {cached} cannot be read (delete it to download it again)"
            if os.path.exists(cached)
            else f"downloading {member.url} to {cached} failed"
        )
        raise WeightsDownloadError(
            f"{label}: {where}: {err}. Without network, copy the file to {cached} by hand "
            "(TORCH_HOME moves the cache), or use pretrained_path with a local file"
        ) from err
    _load_state(stages, state, label)


def _check_trainable_layers(trainable_layers: int) -> None:
    if isinstance(trainable_layers, bool) or trainable_layers not in range(6):
        raise ValueError(
            f"trainable_layers={trainable_layers!r} is not allowed: use 0..5 (None: 3 with "
            "pretrained weights or pretrained_path, else 5)"
        )


def freeze_stages(stages: Mapping[str, nn.Module], trainable_layers: int) -> None:
    """Train only the top ``trainable_layers`` of ``c5, c4, c3, c2, stem``, as torchvision does."""
    _check_trainable_layers(trainable_layers)
    trainable = _TRAINABLE_ORDER[:trainable_layers]
    for name, stage in stages.items():
        stage.requires_grad_(name in trainable)


def check_backbone_options(
    name: str,
    *,
    trainable_layers: int | None = None,
    norm: str = "bn",
    widths: Sequence[int] | None = None,
    weights: str | None = None,
    pretrained_path: str | os.PathLike | None = None,
) -> None:
    """Raise ValueError, naming the argument and what is allowed, for options no network takes.

    The one definition of these rules: ``build_backbone`` and the typed config both call it.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is not allowed: choose one of {', '.join(BACKBONES)}")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not allowed: choose one of {', '.join(NORMS)}")
    if trainable_layers is not None:
        _check_trainable_layers(trainable_layers)
    if widths is not None:
        if name != "simple":
            raise ValueError(
                f"widths={widths!r} is not allowed with backbone={name!r}: only backbone='simple' "
                "takes widths"
            )
        widths = tuple(widths)
        if len(widths) != 5 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"widths={widths!r} is not allowed: 5 positive ints (stem, c2..c5)")
    if weights is not None:
        if pretrained_path is not None:
            raise ValueError(
                f"weights={weights!r} and pretrained_path={os.fspath(pretrained_path)!r} are "
                "both set: use one (weights: torchvision's published weights by name; "
                "pretrained_path: a local file)"
            )
        resolve_weights(name, weights)


def build_backbone(
    name: str,
    *,
    levels: Sequence[str] = LEVELS,
    pretrained_path: str | os.PathLike | None = None,
    trainable_layers: int | None = None,
    norm: str = "bn",
    widths: Sequence[int] | None = None,
    weights: str | None = None,
) -> BottomUp:
    """Build a bottom-up pathway returning ``levels``; only stages up to the highest are built.

    Args:
        name: one of BACKBONES. ResNets are torchvision's, built with ``weights=None``.
        levels: subset of ``c2..c5`` to return.
        pretrained_path: torchvision-format state dict on local disk (``fc.*`` ignored).
        trainable_layers: 0..5 stages trainable counted from c5 down to the stem;
            None means torchvision's rule: 3 with ``weights`` or ``pretrained_path``, else 5.
        norm: one of NORMS. ``bn`` is plain (trainable) BatchNorm; torchvision's pretrained
            recipe is ``frozen_bn``; ``gn`` uses :func:`gn_groups` groups; ``sync_bn`` is
            BatchNorm converted to SyncBatchNorm (it synchronises only under DDP).
        widths: only for ``simple``: 5 channel counts for ``stem, c2, c3, c4, c5``
            (default ``SIMPLE_WIDTHS``).
        weights: torchvision's ImageNet weights for the ResNet by enum name (``IMAGENET1K_V1``,
            ``IMAGENET1K_V2``, ``DEFAULT`` or ``ResNet50_Weights.IMAGENET1K_V2``), downloaded
            once into torchvision's cache (see :func:`load_weights`); not with
            ``pretrained_path``, and ``simple`` has none.
    """
    check_backbone_options(
        name,
        trainable_layers=trainable_layers,
        norm=norm,
        widths=widths,
        weights=weights,
        pretrained_path=pretrained_path,
    )
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ValueError(f"levels={tuple(levels)!r} is not allowed: a non-empty subset of {LEVELS}")
    if trainable_layers is None:
        trainable_layers = 3 if pretrained_path is not None or weights is not None else 5
    if pretrained_path is not None and not os.path.isfile(pretrained_path):
        raise PretrainedFileNotFoundError(
            f"pretrained_path={os.fspath(pretrained_path)!r}: no such file"
        )
    make_norm = norm_layer(norm)
    if name == "simple":
        stages = _simple_stages(SIMPLE_WIDTHS if widths is None else tuple(widths), make_norm)
    else:
        stages = _resnet_stages(name, make_norm)
    top = max(STAGES.index(lv) for lv in levels)
    stages = OrderedDict(list(stages.items())[: top + 1])
    if pretrained_path is not None:
        load_pretrained(stages, pretrained_path)
    if weights is not None:
        load_weights(stages, name, weights)
    freeze_stages(stages, trainable_layers)
    body = BottomUp(stages, levels)
    if norm == "sync_bn":
        body = nn.SyncBatchNorm.convert_sync_batchnorm(body)
    return body


__all__ = [
    "BACKBONES",
    "LEVELS",
    "NORMS",
    "SIMPLE_WIDTHS",
    "STAGES",
    "BottomUp",
    "PretrainedFileNotFoundError",
    "WeightsDownloadError",
    "build_backbone",
    "check_backbone_options",
    "freeze_stages",
    "gn_groups",
    "load_pretrained",
    "load_weights",
    "norm_layer",
    "resolve_weights",
]
