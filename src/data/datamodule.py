"""CocoDataModule: COCO splits (folders or zips) as DDP-aware detection dataloaders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import BatchSampler, DataLoader

from src.data.archive import find_annotations, resolve_split
from src.data.coco import BAD_IMAGE_MODES, CocoDetection, collate_detection
from src.data.coco_index import CocoIndex, load_index
from src.data.proposals import ProposalSet, WithProposals
from src.data.samplers import GroupedBatchSampler, ShardSampler, aspect_ratio_groups
from src.data.transforms import eval_transforms, train_transforms


class CocoDataModule(pl.LightningDataModule):
    """Train/val/test dataloaders over one COCO root.

    Batches are ``(images, targets)`` from ``collate_detection``: images uint8 [3,H,W],
    targets as ``CocoDetection`` gives them (train: ``boxes``, ``labels``, ``image_id``;
    val/test also ``iscrowd``, ``area``). The trainer must run with
    ``use_distributed_sampler=False``: the samplers shard across ranks themselves.

    Args:
        root: COCO root, folder or archive layout (see ``src.data.archive``).
        train_split, val_split: split names; test_split None means val_split.
        batch_size: training images per rank; val_batch_size None means batch_size.
        num_workers, pin_memory, persistent_workers: as for ``DataLoader``.
        skip_images: leave out the first N images (by id) of each split first, so that
            ``skip_images`` + ``max_images`` pick another set of images.
        max_images: only the first N images (by id) of each split, for quick runs. With
            ``val_split == train_split`` validation sees exactly the training images.
        filter_empty: leave training images without a (non-crowd) box out.
        on_bad_image: ``"raise"`` or ``"skip"`` unreadable images (counted, reported).
        hflip_prob, scale_jitter: training augmentation (see ``src.data.transforms``).
        aspect_grouping: batch landscape and portrait images separately.
        cache_dir: index cache folder (None: next to the annotations or ``~/.cache/fpn``).
        seed: the training order is a function of ``(seed, epoch)``, the same on every rank.
        proposals: fixed proposal files per role (``{"train": path, "val": path, "test":
            path}``, None or missing: none; test falls back to val's when the splits agree);
            each target then carries ``proposals`` (``src.data.proposals``, the fast_rcnn task).
    """

    def __init__(
        self,
        root: str,
        *,
        train_split: str = "train2017",
        val_split: str = "val2017",
        test_split: str | None = None,
        batch_size: int = 2,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        max_images: int | None = None,
        skip_images: int = 0,
        filter_empty: bool = True,
        on_bad_image: str = "raise",
        hflip_prob: float = 0.5,
        scale_jitter: tuple[float, float] | None = None,
        aspect_grouping: bool = True,
        cache_dir: str | None = None,
        seed: int = 0,
        proposals: dict[str, str | None] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name}={value}; allowed: a positive integer")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers={num_workers}; allowed: >= 0")
        if max_images is not None and int(max_images) < 1:
            raise ValueError(f"max_images={max_images}; allowed: a positive integer or None")
        if on_bad_image not in BAD_IMAGE_MODES:
            raise ValueError(f"on_bad_image={on_bad_image!r}; allowed: {BAD_IMAGE_MODES}")
        self.train_transform = train_transforms(
            hflip_prob, tuple(scale_jitter) if scale_jitter else None
        )
        self.root = Path(root)
        self.train_split, self.val_split = train_split, val_split
        self.test_split = test_split if test_split is not None else val_split
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.max_images, self.filter_empty, self.on_bad_image = (
            max_images,
            filter_empty,
            on_bad_image,
        )
        self.aspect_grouping, self.cache_dir, self.seed = aspect_grouping, cache_dir, int(seed)
        self.skip_images = int(skip_images)
        self.proposal_files = {k: v for k, v in (proposals or {}).items() if v is not None}
        unknown = set(self.proposal_files) - {"train", "val", "test"}
        if unknown:
            raise ValueError(f"proposals for {sorted(unknown)}; allowed roles: train, val, test")
        if self.proposal_files and scale_jitter:
            raise ValueError(
                "scale_jitter with fixed proposals is not supported (its box sanitizing would "
                "drop proposals and boxes apart): set scale_jitter to null"
            )
        same_split = self.test_split == self.val_split
        if "test" not in self.proposal_files and same_split and "val" in self.proposal_files:
            self.proposal_files["test"] = self.proposal_files["val"]
        self.train_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None
        self.test_dataset: CocoDetection | None = None
        self._indexes: dict[str, CocoIndex] = {}
        self._train_sampler: GroupedBatchSampler | None = None
        self._resume_epoch: int | None = None
        self._category_split = self._first_split_with_annotations()
        self._category_index()  # a broken json fails here, before any model is built

    # ---- categories ---------------------------------------------------------------------
    def _first_split_with_annotations(self) -> str:
        """The train split's annotations define the labels; evaluation-only setups without
        a train split fall back to the val/test split's (COCO's splits share categories)."""
        for split in dict.fromkeys((self.train_split, self.val_split, self.test_split)):
            if find_annotations(self.root, split) is not None:
                return split
        resolve_split(self.root, self.train_split)  # raises, naming what is missing
        raise AssertionError("resolve_split found annotations that find_annotations did not")

    def _index(self, split: str) -> CocoIndex:
        if split not in self._indexes:
            self._indexes[split] = load_index(resolve_split(self.root, split), self.cache_dir)
        return self._indexes[split]

    def _category_index(self) -> CocoIndex:
        split = self._category_split
        if split not in self._indexes:
            source = find_annotations(self.root, split)
            assert source is not None
            self._indexes[split] = load_index(source, self.cache_dir)
        return self._indexes[split]

    @property
    def categories(self) -> list[dict]:
        """``[{"id": original_id, "name": str}]``; label ``i + 1`` is entry ``i``."""
        index = self._category_index()
        return [
            {"id": int(c), "name": str(n)}
            for c, n in zip(index.category_ids.tolist(), index.category_names.tolist())
        ]

    # ---- datasets -----------------------------------------------------------------------
    def _dataset(self, split: str, *, train: bool, role: str | None = None):
        """The dataset of ``split``; with a proposal file for ``role``, wrapped so its targets
        carry ``proposals`` (the transforms then run in the wrapper, after they are attached)."""
        # validating on the training split: the very images training sees (quick runs)
        same_as_train = not train and split == self.train_split
        transforms = self.train_transform if train else eval_transforms()
        proposal_file = self.proposal_files.get(role) if role else None
        dataset = CocoDetection(
            self.root,
            split,
            train=train,
            transforms=None if proposal_file else transforms,
            filter_empty=self.filter_empty if (train or same_as_train) else False,
            on_bad_image=self.on_bad_image,
            max_images=self.max_images,
            skip_images=self.skip_images,
            cache_dir=self.cache_dir,
            index=self._index(split),
        )
        if len(dataset) == 0:
            raise ValueError(f"split {split!r} under {self.root} has no usable image")
        expected = [c["id"] for c in self.categories]
        if dataset.category_ids != expected:
            raise ValueError(
                f"split {split!r} has categories {dataset.category_ids[:10]}... ({len(dataset.category_ids)}), "
                f"split {self._category_split!r} {expected[:10]}... ({len(expected)}): labels would disagree"
            )
        if proposal_file:
            return WithProposals(dataset, ProposalSet(proposal_file), transforms)
        return dataset

    def eval_dataset(self, split: str) -> CocoDetection:
        """Every image of ``split`` as evaluation sees it (for ``python -m src.proposals``):
        untransformed; on the training split, the images training uses."""
        return self._dataset(split, train=False)

    def setup(self, stage: str | None = None) -> None:
        """Checks the paths of the splits ``stage`` needs, then builds their datasets."""
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset(self.train_split, train=True, role="train")
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._dataset(self.val_split, train=False, role="val")
        if stage in (None, "test") and self.test_dataset is None:
            self.test_dataset = self._dataset(self.test_split, train=False, role="test")

    def teardown(self, stage: str | None = None) -> None:
        for dataset in (self.train_dataset, self.val_dataset, self.test_dataset):
            if dataset is not None and dataset.num_skipped:
                warnings.warn(
                    f"{dataset.split}: {dataset.num_skipped} unreadable images were skipped "
                    f"(image ids {dataset.skipped_image_ids[:20]})",
                    stacklevel=2,
                )

    @property
    def skipped_images(self) -> dict[str, int]:
        """Distinct unreadable images skipped so far, per dataset role."""
        roles = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}
        return {k: d.num_skipped for k, d in roles.items() if d is not None}

    # ---- loaders ------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        world = int(trainer.world_size)
        connector = getattr(trainer, "_accelerator_connector", None)
        if world > 1 and getattr(connector, "use_distributed_sampler", False):
            raise ValueError(
                "CocoDataModule shards batches itself: create the Trainer with "
                "use_distributed_sampler=False"
            )
        return world, int(trainer.global_rank)

    def _loader(self, dataset: CocoDetection, batch_sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.num_workers,
            collate_fn=collate_detection,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        world, rank = self._world()
        ratios = self.train_dataset.aspect_ratios
        groups = aspect_ratio_groups(ratios) if self.aspect_grouping else np.zeros(len(ratios))
        sampler = GroupedBatchSampler(
            groups, self.batch_size, shuffle=True, seed=self.seed, num_replicas=world, rank=rank
        )
        if self._resume_epoch is not None:
            sampler.set_epoch(self._resume_epoch)
            self._resume_epoch = None
        self._train_sampler = sampler
        return self._loader(self.train_dataset, sampler)

    # ---- resuming -----------------------------------------------------------------------
    # Lightning builds (and prefetches from) the train iterator before it calls set_epoch,
    # so a resumed run would replay epoch 0's order; the checkpoint carries the next epoch
    # (exact for checkpoints taken at the end of an epoch, as ModelCheckpoint does by default).
    def state_dict(self) -> dict:
        sampler = self._train_sampler
        if sampler is None or sampler.sampler.last_iterated is None:
            return {}
        return {"train_epoch": sampler.sampler.last_iterated + 1}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_epoch = state_dict.get("train_epoch")

    def _eval_loader(self, dataset: CocoDetection) -> DataLoader:
        world, rank = self._world()
        shard = ShardSampler(len(dataset), num_replicas=world, rank=rank)
        return self._loader(dataset, BatchSampler(shard, self.val_batch_size, drop_last=False))

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            self.setup("test")
        assert self.test_dataset is not None
        return self._eval_loader(self.test_dataset)
