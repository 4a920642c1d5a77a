"""CocoDataModule: path checks, categories, DDP sharding per rank, and epochs under a real Trainer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

import src.data.coco_index as coco_index
from src.data.datamodule import CocoDataModule
from src.data.samplers import EpochPermutation, GroupedBatchSampler


def ids_of(loader) -> list[list[int]]:
    return [[t["image_id"] for t in targets] for _, targets in loader]


def test_batches_are_lists_of_uint8_images_and_targets(mini_coco) -> None:
    dm = CocoDataModule(str(mini_coco()), batch_size=3, val_batch_size=2)
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert isinstance(images, list) and 1 <= len(images) <= 3 and len(targets) == len(images)
    assert all(im.dtype == torch.uint8 and im.shape[0] == 3 for im in images)
    assert set(targets[0]) == {"boxes", "labels", "image_id"}
    # aspect grouping: one orientation per batch
    assert all(
        len({im.shape[1] > im.shape[2] for im in ims}) == 1 for ims, _ in dm.train_dataloader()
    )
    images, targets = next(iter(dm.val_dataloader()))
    assert len(images) == 2 and set(targets[0]) == {
        "boxes",
        "labels",
        "image_id",
        "iscrowd",
        "area",
    }
    assert sorted(i for b in ids_of(dm.val_dataloader()) for i in b) == list(range(1000, 1005))


def test_categories_right_after_init_from_the_cached_index(mini_coco, monkeypatch) -> None:
    root = str(mini_coco())
    parsed = []
    real_build = coco_index.build_index
    monkeypatch.setattr(
        coco_index, "build_index", lambda data, name: parsed.append(name) or real_build(data, name)
    )
    dm = CocoDataModule(root)
    assert dm.categories == [
        {"id": 3, "name": "car"},
        {"id": 7, "name": "train"},
        {"id": 90, "name": "toothbrush"},
    ]
    dm.setup("fit")
    assert [Path(p).name for p in parsed] == ["instances_train2017.json", "instances_val2017.json"]
    CocoDataModule(root).setup("fit")  # a later run: everything from the cache
    assert len(parsed) == 2


def test_missing_paths_are_named_with_both_layouts(mini_coco, tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"(?s)root .*nowhere does not exist.*trainval2017\.zip"
    ):
        CocoDataModule(str(tmp_path / "nowhere"))
    root = mini_coco()
    (root / "annotations" / "instances_train2017.json").rename(root / "elsewhere.json")
    (root / "annotations" / "instances_val2017.json").rename(root / "elsewhere_val.json")
    with pytest.raises(
        FileNotFoundError, match=r"(?s)instances_train2017\.json does not exist.*trainval2017"
    ):
        CocoDataModule(str(root))
    (root / "elsewhere.json").rename(root / "annotations" / "instances_train2017.json")
    (root / "elsewhere_val.json").rename(root / "annotations" / "instances_val2017.json")
    dm = CocoDataModule(str(root), val_split="val2014")
    with pytest.raises(
        FileNotFoundError, match=r"(?s)val2014/ nor the archive .*val2014\.zip.*layout"
    ):
        dm.setup("fit")
    dm = CocoDataModule(str(root), test_split="test2017")
    with pytest.raises(FileNotFoundError, match=r"test2017"):
        dm.setup("test")


def test_evaluation_only_root_takes_categories_from_the_val_split(mini_coco) -> None:
    root = mini_coco()
    (root / "annotations" / "instances_train2017.json").unlink()
    dm = CocoDataModule(str(root))
    assert [c["id"] for c in dm.categories] == [3, 7, 90]
    dm.setup("test")
    assert len(dm.test_dataset) == 5


def test_bad_arguments_are_named(mini_coco) -> None:
    root = str(mini_coco())
    for kwargs, pattern in (({"batch_size": 0}, "batch_size=0"), ({"on_bad_image": "ignore"}, "on_bad_image"),
                            ({"hflip_prob": 1.5}, "hflip_prob=1.5"), ({"max_images": 0}, "max_images=0"),
                            ({"scale_jitter": (2.0, 1.0)}, "scale_range")):  # fmt: skip
        with pytest.raises(ValueError, match=pattern):
            CocoDataModule(root, **kwargs)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_ranks_shard_train_and_val(mini_coco, world: int) -> None:
    root = str(mini_coco(train=23, val=7))
    train, val = [], []
    for rank in range(world):
        dm = CocoDataModule(root, batch_size=2, seed=3)
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        dm.setup("fit")
        train.append(ids_of(dm.train_dataloader()))
        val.append(ids_of(dm.val_dataloader()))
    assert len({len(batches) for batches in train}) == 1  # same number of steps everywhere
    seen = [i for batches in train for b in batches for i in b]
    assert len(seen) == len(set(seen)) and set(seen) <= set(range(1, 24))
    assert sorted(i for batches in val for b in batches for i in b) == list(range(1000, 1007))


def test_same_images_for_train_and_val_in_quick_runs(coco_tiny: Path) -> None:
    dm = CocoDataModule(
        str(coco_tiny), val_split="train2017", max_images=6, hflip_prob=0, batch_size=2
    )
    dm.setup("fit")
    train = {t["image_id"]: t for _, targets in dm.train_dataloader() for t in targets}
    val = {t["image_id"]: t for _, targets in dm.val_dataloader() for t in targets}
    assert len(train) == 6 and sorted(train) == sorted(val)
    for image_id, t in train.items():
        keep = val[image_id]["iscrowd"] == 0
        assert torch.equal(t["boxes"], val[image_id]["boxes"][keep])  # no flip, same boxes
        assert torch.equal(t["labels"], val[image_id]["labels"][keep])


class _Recorder(pl.LightningModule):
    """Trains nothing; records which images each training epoch saw, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.epochs: list[list[int]] = []

    def on_train_epoch_start(self) -> None:
        self.epochs.append([])

    def training_step(self, batch, batch_idx):
        self.epochs[-1] += [t["image_id"] for t in batch[1]]
        return (self.weight**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`", "ignore:.*LeafSpec")
def test_trainer_sets_the_epoch_and_resumed_orders_match(
    mini_coco, tmp_path: Path, monkeypatch
) -> None:
    calls = []
    real_set_epoch = EpochPermutation.set_epoch
    monkeypatch.setattr(
        EpochPermutation, "set_epoch", lambda self, e: calls.append(e) or real_set_epoch(self, e)
    )
    root = str(mini_coco(train=10, val=2))
    dm = CocoDataModule(root, batch_size=2, seed=11)
    module = _Recorder()
    trainer = pl.Trainer(
        max_epochs=3, use_distributed_sampler=False, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert len(module.epochs) == 3
    assert calls == [0, 1, 2]  # Lightning finds batch_sampler.sampler.set_epoch
    assert all(sorted(e) == list(range(1, 11)) for e in module.epochs)
    assert len({tuple(e) for e in module.epochs}) == 3  # a new order every epoch
    # the order of epoch e is a function of (seed, e) alone: a resumed run repeats it
    for epoch, seen in enumerate(module.epochs):
        ds = dm.train_dataset
        sampler = GroupedBatchSampler((ds.aspect_ratios < 1).astype(int), 2, seed=11)
        sampler.set_epoch(epoch)
        assert seen == [int(ds.image_ids[i]) for b in sampler for i in b]


def test_ddp_without_our_samplers_is_refused(mini_coco) -> None:
    dm = CocoDataModule(str(mini_coco()))
    connector = SimpleNamespace(use_distributed_sampler=True)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0, _accelerator_connector=connector)
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        dm.train_dataloader()


def test_flip_and_zoom_move_boxes_with_the_pixels(mini_coco) -> None:
    root = str(mini_coco(train=3, val=1))
    plain = CocoDataModule(root, hflip_prob=0.0)
    flipped = CocoDataModule(root, hflip_prob=1.0)
    zoomed = CocoDataModule(root, hflip_prob=0.0, scale_jitter=(0.5, 0.5))
    for dm in (plain, flipped, zoomed):
        dm.setup("fit")
    for i in range(3):
        (image, target), (f_image, f_target) = plain.train_dataset[i], flipped.train_dataset[i]
        width = image.shape[-1]
        assert torch.equal(f_image, image.flip(-1))
        expected = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
            [width, 0, width, 0]
        )
        torch.testing.assert_close(f_target["boxes"].as_subclass(torch.Tensor), expected)
        z_image, z_target = zoomed.train_dataset[i]
        assert z_image.shape == image.shape  # the canvas is kept, the content shrinks
        z_boxes = z_target["boxes"].as_subclass(torch.Tensor)
        sizes, z_sizes = (
            target["boxes"][:, 2:] - target["boxes"][:, :2],
            z_boxes[:, 2:] - z_boxes[:, :2],
        )
        torch.testing.assert_close(z_sizes, sizes * 0.5, atol=0.51, rtol=0)
        assert torch.equal(z_target["labels"], target["labels"])
