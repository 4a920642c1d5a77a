"""The paper's three protocols: the RPN alone (Table 1), Fast R-CNN on fixed proposals (Table 2),
Faster R-CNN (Table 3); proposal files; one sweep command per table; the report over seeds."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from run_helpers import TINY, compose_train, results, run_module

from src.analysis.ablation import Cell, beats_spread, group, load_jobs
from src.data.proposals import ProposalFileError, ProposalSet, save_proposals
from src.models.detector import build_detector
from src.models.inference import to_float_images
from src.models.stages import propose, rpn_proposals
from src.report import write_report
from src.training.config import ConfigError, check

ROWS = ("a_c4", "b_c5", "c_fpn", "d_bottom_up", "e_no_lateral", "f_p2_only")
SMALL = dict(min_size=128, max_size=128, anchor_scale=0.25, out_channels=16,
             representation_size=32)  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(module_tmp) -> Path:
    from src.data.synthetic import ensure_synthetic

    root = module_tmp("data")
    ensure_synthetic(root / "synthetic", num_train=16, num_val=8, image_size=128, seed=0)
    return root


# ---- the models of each task --------------------------------------------------------------
def test_propose_returns_torchvisions_proposals_with_their_objectness() -> None:
    torch.manual_seed(0)
    model = build_detector("fpn", "resnet18", 3, **SMALL).eval()
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    with torch.no_grad():
        expected, _ = model.rpn(image_list, features)
        boxes, scores, losses = propose(model.rpn, image_list, features)
    assert losses == {}
    for b, e, s in zip(boxes, expected, scores):
        torch.testing.assert_close(b, e)
        assert s.shape == (len(b),) and ((s >= 0) & (s <= 1)).all()


@pytest.mark.parametrize("variant", ["c4", "fpn"])
def test_each_task_builds_and_trains_only_its_parts(variant: str) -> None:
    torch.manual_seed(0)
    rpn = build_detector(variant, "resnet18", 3, task="rpn", **SMALL)
    fast = build_detector(variant, "resnet18", 3, task="fast_rcnn", **SMALL)
    assert rpn.roi_heads is None and rpn.rpn is not None and rpn.task == "rpn"
    assert fast.rpn is None and fast.roi_heads is not None and fast.task == "fast_rcnn"
    if variant == "c4":  # res5 is the C4 box head: the RPN-only model has none of it
        assert not any("res5" in n for n, _ in rpn.named_parameters())
    from src.models.stages import fast_rcnn_losses, rpn_losses

    images = to_float_images([torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)] * 2)
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 70]]), "labels": torch.tensor([1])}] * 2
    for model, losses in (
        (rpn, lambda m: rpn_losses(m.train(), images, targets)),
        (fast, lambda m: fast_rcnn_losses(
            m.train(), images, targets, [torch.tensor([[12.0, 8, 58, 72], [0, 0, 30, 30]])] * 2)),
    ):  # fmt: skip
        values = losses(model)
        expected = (
            {"loss_objectness", "loss_rpn_box_reg"}
            if model is rpn
            else {"loss_classifier", "loss_box_reg"}
        )
        assert set(values) == expected
        sum(values.values()).backward()
        # every trainable parameter the model still has takes part (no DDP unused parameters)
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not unused, unused


# ---- proposal files -----------------------------------------------------------------------
def _write(path: Path, ids=(1, 5, 9), split="val2017") -> list[torch.Tensor]:
    boxes = [torch.rand(n, 4) * 50 + torch.tensor([0, 0, 50, 50]) for n in (3, 0, 5)][: len(ids)]
    logits = [torch.linspace(2, -2, len(b)) for b in boxes]
    save_proposals(path, list(ids), boxes, logits, split=split, source="test.ckpt")
    return boxes


def test_proposal_file_round_trip_and_detectron2_fields(tmp_path: Path) -> None:
    boxes = _write(tmp_path / "p.npz")
    store = ProposalSet(tmp_path / "p.npz")
    assert list(store.ids) == [1, 5, 9] and store.split == "val2017" and len(store) == 3
    got, logits = store.for_image(9)
    torch.testing.assert_close(got, boxes[2])
    assert logits.shape == (5,) and (logits.diff() <= 0).all()
    assert store.for_image(5)[0].shape == (0, 4)
    d2 = store.as_detectron2()
    assert set(d2) == {"ids", "boxes", "objectness_logits", "bbox_mode"}
    assert d2["bbox_mode"] == 0 and [len(b) for b in d2["boxes"]] == [3, 0, 5]
    # plain numpy without pickle reads it, as documented
    with np.load(tmp_path / "p.npz", allow_pickle=False) as raw:
        assert str(raw["bbox_mode"]) == "XYXY_ABS" and raw["boxes"].shape == (8, 4)


def test_one_rpns_proposals_share_a_content_digest_whatever_checkpoint_file_wrote_them(
    tmp_path: Path,
) -> None:
    ids = [1, 5, 9]
    boxes = [torch.rand(n, 4) * 50 + torch.tensor([0, 0, 50, 50]) for n in (3, 0, 5)]
    logits = [torch.linspace(2, -2, len(b)) for b in boxes]

    def digests(name, source, split="val2017", ids=ids, boxes=boxes, logits=logits):
        path = save_proposals(tmp_path / name, ids, boxes, logits, split=split, source=source)
        return hashlib.sha256(path.read_bytes()).hexdigest(), ProposalSet(path).content_digest()

    # the same weights saved as last.ckpt and as epoch_006.ckpt: other files, same proposals
    file_a, content_a = digests("a.npz", "/run/checkpoints/last.ckpt")
    file_b, content_b = digests("b.npz", "/run/checkpoints/epoch_006.ckpt")
    assert file_a != file_b and content_a == content_b
    assert digests("c.npz", "/run/checkpoints/last.ckpt") == (file_a, content_a)  # deterministic
    # one box or logit moved by one float32 step, another image id, the same boxes shared out
    # among the images otherwise, or the other split: each is another set
    moved = [b.clone() for b in boxes]
    moved[2][4, 3] = torch.nextafter(moved[2][4, 3], torch.tensor(1e9))
    lowered = [s.clone() for s in logits]
    lowered[0][0] = torch.nextafter(lowered[0][0], torch.tensor(-1e9))
    flat, flat_logits = torch.cat(boxes), torch.cat(logits)
    shared_out = [flat[:4], flat[4:4], flat[4:]]
    others = {
        "boxes": digests("d.npz", "last.ckpt", boxes=moved),
        "logits": digests("e.npz", "last.ckpt", logits=lowered),
        "ids": digests("f.npz", "last.ckpt", ids=[1, 5, 10]),
        "counts": digests("g.npz", "last.ckpt", boxes=shared_out,
                          logits=[flat_logits[:4], flat_logits[4:4], flat_logits[4:]]),
        "split": digests("h.npz", "last.ckpt", split="train2017"),
    }  # fmt: skip
    assert all(content != content_a for _, content in others.values()), others


def test_proposal_file_that_does_not_match_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "p.npz")
    store = ProposalSet(tmp_path / "p.npz")
    with pytest.raises(ProposalFileError, match=r"image ids \[2, 3\]"):
        store.check_covers([1, 2, 3, 5], "val2017")
    with pytest.raises(ProposalFileError, match=r"holds split 'val2017'.*split 'train2017'"):
        store.check_covers([1], "train2017")


def test_proposal_file_is_data_never_code(tmp_path: Path) -> None:
    evil = tmp_path / "evil.npz"
    # an object array is stored as a pickle: reading it would run code of the file's choosing
    np.savez(evil, ids=np.array([{"x": 1}], dtype=object), counts=np.array([1]))
    with pytest.raises(ProposalFileError, match="without pickle"):
        ProposalSet(evil)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ProposalFileError, match=r"text\.npz"):
        ProposalSet(tmp_path / "text.npz")
    with pytest.raises(ProposalFileError, match="does not exist"):
        ProposalSet(tmp_path / "missing.npz")


# ---- config ---------------------------------------------------------------------------------
def test_fast_rcnn_needs_proposal_files_and_others_refuse_them(tmp_path, data_dir) -> None:
    cfg = compose_train([*TINY, "experiment=table2/c_fpn"], tmp_path, data_dir)
    with pytest.raises(ConfigError, match=r"data\.proposals\.train, data\.proposals\.val"):
        check(cfg)
    cfg = compose_train(
        [*TINY, "experiment=table1/c_fpn", "data.proposals.val=x.npz"], tmp_path, data_dir
    )
    with pytest.raises(ConfigError, match=r"data\.proposals\.val is set but model\.task=rpn"):
        check(cfg)
    cfg = compose_train(
        [*TINY, "model.task=fast_rcnn", "data.proposals.train=nope.npz",
         "data.proposals.val=nope.npz"], tmp_path, data_dir,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.proposals\.train='nope\.npz': no such file"):
        check(cfg)


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_every_table_experiment_composes_its_row_and_task(tmp_path, data_dir, table) -> None:
    task = {"table1": "rpn", "table2": "fast_rcnn", "table3": "faster_rcnn"}[table]
    for row in ROWS:
        cfg = compose_train([f"experiment={table}/{row}"], tmp_path, data_dir)
        assert str(cfg.model.task) == task
        assert str(cfg.model.variant) == row.split("_", 1)[1].replace("fpn", "fpn")
        monitor = cfg.callbacks.model_checkpoint.monitor
        assert monitor == ("val/ar_1000" if task == "rpn" else "val/map")


# ---- end to end: RPN -> proposal files -> Fast R-CNN, and each table's sweep ---------------
FAST = [*TINY, "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def rpn_and_proposals(module_tmp, data_dir) -> dict[str, Path]:
    """A few steps of Table 1's FPN RPN, then its proposals for both splits via src.proposals."""
    out = module_tmp("protocols")
    proc = run_module(
        "src.train",
        [*FAST, "experiment=table1/c_fpn", f"paths.data_dir={data_dir}",
         f"hydra.run.dir={out / 'rpn'}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ckpt = out / "rpn" / "checkpoints" / "last.ckpt"
    files = {}
    for split, per_image in (("train2017", 300), ("val2017", None)):
        files[split] = out / f"proposals_{split}.npz"
        args = [f"ckpt_path={ckpt}", f"split={split}", f"output={files[split]}",
                f"paths.data_dir={data_dir}", f"hydra.run.dir={out / split}",
                "data.synthetic.num_train=16", "data.synthetic.num_val=8",
                "data.synthetic.image_size=128", "data.num_workers=0"]  # fmt: skip
        if per_image:
            args.append(f"per_image={per_image}")
        proc = run_module("src.proposals", args)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {"dir": out, "ckpt": ckpt, **files}


def test_rpn_run_reports_proposal_recall_only(rpn_and_proposals) -> None:
    record = results(rpn_and_proposals["dir"] / "rpn")
    assert record["status"] == "ok" and record["task"] == "rpn" and record["row"] == "c"
    metrics = record["metrics"]
    assert 0 <= metrics["val/ar_1000"] <= 1 and "val/ar_small" in metrics
    assert not any(k.startswith("val/map") for k in metrics)
    assert set(k for k in metrics if k.startswith("train/loss_")) == {
        "train/loss_objectness",
        "train/loss_rpn_box_reg",
    }


def test_anchor_stats_reads_how_a_trained_rpn_scores_each_size(
    rpn_and_proposals, data_dir, capsys
) -> None:
    from src.analysis.anchor_stats import main

    main([str(data_dir / "synthetic"), "--split", "val2017", "--images", "4",
          "--checkpoint", str(rpn_and_proposals["ckpt"])])  # fmt: skip
    scores, kept = capsys.readouterr().out.split("\n\n")
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in scores.splitlines()[3:]}
    assert set(rows) == {f"positive, {s} box" for s in ("small", "medium", "large")} | {"negative"}
    per_image, loss, above = (float(x) for x in rows["negative"])
    assert per_image > 100 and loss > 0 and 0 <= above <= 1
    assert sum(float(r[0]) for k, r in rows.items() if k != "negative") > 0  # positives seen

    def proposal_rows(text: str) -> dict[str, list[str]]:
        cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()[3:]]
        return {c[0]: c[1:] for c in cells}

    # the RPN's own counts (TINY's recipe): at most post-NMS kept, from the levels' candidates
    own = proposal_rows(kept)
    assert set(own) == {"training", "testing"}
    for pre, most, candidates, mean_range, *covered in own.values():
        mean = float(mean_range.split()[0])
        assert 0 < mean <= min(float(most), float(candidates))
        assert float(candidates) <= 5 * int(pre)  # p2..p6, each at most pre-NMS
        assert all(0 <= float(c) <= 1 for c in covered)
    # one candidate a level: NMS can keep at most one proposal for each of FPN's five levels
    main([str(data_dir / "synthetic"), "--split", "val2017", "--images", "4",
          "--checkpoint", str(rpn_and_proposals["ckpt"]), "--pre-nms-top-n-test", "1"])  # fmt: skip
    one = proposal_rows(capsys.readouterr().out.split("\n\n")[1])["testing"]
    assert one[:3] == ["1", own["testing"][1], "5"]
    mean, (low, high) = float(one[3].split()[0]), one[3].split()[1].strip("()").split("-")
    assert 0 < int(low) <= mean <= int(high) <= 5
    with pytest.raises(SystemExit):
        main([str(data_dir / "synthetic"), "--checkpoint", str(rpn_and_proposals["ckpt"]),
              "--pre-nms-top-n-train", "0"])  # fmt: skip
    assert "--pre-nms-top-n-train=0: give a positive count" in capsys.readouterr().err


def test_written_proposals_are_the_rpns_and_fast_rcnn_reads_those(
    rpn_and_proposals, data_dir, tmp_path
) -> None:
    from src.training.config import build_datamodule
    from src.training.module import DetectionModule

    val = ProposalSet(rpn_and_proposals["val2017"])
    train = ProposalSet(rpn_and_proposals["train2017"])
    assert val.split == "val2017" and train.split == "train2017"
    assert max(np.diff(train.offsets)) <= 300 and max(np.diff(val.offsets)) <= 1000
    assert val.source == str(rpn_and_proposals["ckpt"])
    # each split's log names its file's content digest, the one to compare files by
    for split, store in (("val2017", val), ("train2017", train)):
        log_text = (rpn_and_proposals["dir"] / split / "proposals.log").read_text()
        assert f"content sha256 {store.content_digest()}" in log_text
    # the file holds what the RPN proposes for each image (the paper's 1000 at test)
    module = DetectionModule.from_checkpoint(str(rpn_and_proposals["ckpt"])).eval()
    from src.proposals import set_proposal_count

    set_proposal_count(module.model, 1000)
    cfg = compose_train(
        [*TINY, "experiment=table2/c_fpn", f"data.proposals.train={rpn_and_proposals['train2017']}",
         f"data.proposals.val={rpn_and_proposals['val2017']}", "data.hflip_prob=1.0"],
        tmp_path, data_dir,
    )  # fmt: skip
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    image, target = datamodule.val_dataset[0]
    boxes, _ = rpn_proposals(module.model, to_float_images([image]))
    stored, logits = val.for_image(target["image_id"])
    torch.testing.assert_close(stored, boxes[0])
    torch.testing.assert_close(target["proposals"].as_subclass(torch.Tensor), stored)
    assert (logits.diff() <= 1e-6).all()  # best first
    # training images are flipped together with their proposals
    image, target = datamodule.train_dataset[0]
    stored, _ = train.for_image(target["image_id"])
    width = image.shape[-1]
    flipped = stored[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
        [width, 0, width, 0]
    )
    torch.testing.assert_close(target["proposals"].as_subclass(torch.Tensor), flipped)


def test_fast_rcnn_trains_and_evaluates_on_the_written_proposals(
    rpn_and_proposals, data_dir, tmp_path
) -> None:
    out = tmp_path / "fast"
    proc = run_module(
        "src.train",
        [*FAST, "experiment=table2/c_fpn", f"paths.data_dir={data_dir}", f"hydra.run.dir={out}",
         f"data.proposals.train={rpn_and_proposals['train2017']}",
         f"data.proposals.val={rpn_and_proposals['val2017']}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    record = results(out)
    assert record["task"] == "fast_rcnn" and record["status"] == "ok"
    assert record["proposals"]["train"] == str(rpn_and_proposals["train2017"])
    assert {"test/map", "test/map_small"} <= set(record["metrics"])
    assert not any(k.startswith("val/ar_") for k in record["metrics"])
    losses = {k for k in record["metrics"] if k.startswith("train/loss_")}
    assert losses == {"train/loss_classifier", "train/loss_box_reg"}


def test_a_proposal_file_of_other_images_is_refused_naming_them(
    rpn_and_proposals, data_dir, tmp_path
) -> None:
    bad = tmp_path / "few.npz"
    _write(bad, ids=(1_000_001, 1_000_002), split="val2017")
    proc = run_module(
        "src.train",
        [*FAST, "experiment=table2/c_fpn", f"paths.data_dir={data_dir}",
         f"hydra.run.dir={tmp_path / 'run'}", f"data.proposals.train={rpn_and_proposals['train2017']}",
         f"data.proposals.val={bad}"],
    )  # fmt: skip
    assert proc.returncode != 0
    assert "few.npz" in proc.stderr and "no proposals for 6 of the 8 images" in proc.stderr


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_each_tables_sweep_runs_all_six_rows_fast_dev_run(
    table, rpn_and_proposals, data_dir, tmp_path
) -> None:
    sweep = tmp_path / table
    extra = []
    if table == "table2":
        extra = [f"data.proposals.train={rpn_and_proposals['train2017']}",
                 f"data.proposals.val={rpn_and_proposals['val2017']}"]  # fmt: skip
    proc = run_module(
        "src.train",
        ["-m", f"+sweep={table}", "seed=0", "debug=fast_dev_run", *TINY, *extra,
         f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = [results(sweep / str(i)) for i in range(6)]
    assert [r["row"] for r in records] == list("abcdef")
    assert {r["status"] for r in records} == {"ok"}


# ---- the report over seeds ------------------------------------------------------------------
def _fake_job(
    folder: Path, task: str, variant: str, row: str, seed: int, extra: tuple = (), **values
) -> None:
    """A job folder with only ``results.json``: grouped by its overrides (``extra`` among them)."""
    folder.mkdir(parents=True)
    record = {"task": task, "variant": variant, "row": row, "seed": seed, "status": "ok",
              "overrides": [f"experiment=x/{variant}", f"seed={seed}", *extra],
              "metrics": {f"test/{k}": v for k, v in values.items()}}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(record))


def test_report_pools_seeds_and_marks_differences_beyond_the_spread(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    job = 0
    for variant, row, ar in (("fpn", "c", (0.50, 0.52, 0.54)), ("c5", "b", (0.30, 0.31, 0.29)),
                             ("bottom_up", "d", (0.49, 0.55, 0.53))):  # fmt: skip
        for seed, value in enumerate(ar):
            _fake_job(sweep / str(job), "rpn", variant, row, seed, ar_1000=value, ar_100=value / 2)
            job += 1
    cells = group(__import__("src.analysis.ablation", fromlist=["load_jobs"]).load_jobs(sweep))
    assert [(c.row, c.seeds) for c in cells] == [("b", [0, 1, 2]), ("c", [0, 1, 2]),
                                                 ("d", [0, 1, 2])]  # fmt: skip
    fpn = next(c for c in cells if c.row == "c")
    mean, std, n = fpn.stats("ar_1000")
    assert (round(mean, 6), round(std, 6), n) == (52.0, 2.0, 3)
    assert beats_spread(next(c for c in cells if c.row == "b"), fpn, "ar_1000") is True
    assert beats_spread(next(c for c in cells if c.row == "d"), fpn, "ar_1000") is False
    one_seed = Cell("rpn", "c4", "a", "", [cells[0].jobs[0]])
    assert beats_spread(one_seed, fpn, "ar_1000") is None
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    assert (
        "## Table 1" in md and "| (c) fpn | 0,1,2 | 26.0 ± 1.0 | 44.0 | 52.0 ± 2.0 | 56.3 |" in md
    )
    assert "30.0 ± 1.0 *" in md  # (b) is below (c) beyond the spread
    assert "52.3 ± 3.1 |" in md  # (d) is not marked


def test_a_row_without_a_comparable_fpn_is_named_not_left_silently_unmarked(tmp_path) -> None:
    """A row run with a setting no row (c) ran with gets no ``*`` (its (c) would differ in more
    than the row), and the report says so under the table, naming the settings that differ;
    once a (c) with that setting is there, the row is marked against it and the note goes."""
    sweep, cap = tmp_path / "sweep", ("model.rpn_positives_per_box=2",)
    for name, variant, row, maps, extra in (
        ("c", "fpn", "c", (0.50, 0.52, 0.54), ()),
        ("d", "bottom_up", "d", (0.49, 0.55, 0.53), ()),
        ("f_cap", "p2_only", "f", (0.30, 0.31, 0.29), cap),
    ):  # fmt: skip
        for seed, value in enumerate(maps):
            job = sweep / f"{name}_s{seed}"
            _fake_job(job, "faster_rcnn", variant, row, seed, extra, map=value)
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    assert "| 30.0 ± 1.0 |" in md  # 22 below (c), unmarked: no (c) shares its cap
    assert "Rows not compared with (c), so never marked:" in md
    assert (
        "- (f) p2_only `model.rpn_positives_per_box=2`: no row (c) ran with its settings; the "
        "nearest, (c) fpn `model.rpn_positives_per_box=-`, differs in `model.rpn_positives_per_box`"
    ) in md
    assert "- (d) bottom_up" not in md  # compared with (c): within the spread, not named
    for seed, value in enumerate((0.50, 0.52, 0.54)):
        _fake_job(sweep / f"c_cap_s{seed}", "faster_rcnn", "fpn", "c", seed, cap, map=value)
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    assert "| 30.0 ± 1.0 * |" in md and "not compared" not in md
    for folder in sweep.glob("c*_s*"):  # no (c) at all: the table says so
        shutil.rmtree(folder)
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    assert "No row (c) in this table, so no row is compared with it or marked." in md
    # two (c)s that differ from (f) alike: the nearest is the one with more seeds
    _fake_job(sweep / "c_lr1_s0", "faster_rcnn", "fpn", "c", 0, ("optim.lr=0.01",), map=0.5)
    for seed in range(3):
        _fake_job(sweep / f"c_lr2_s{seed}", "faster_rcnn", "fpn", "c", seed, ("optim.lr=0.02",),
                  map=0.5)  # fmt: skip
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("- (f) p2_only"))
    assert "optim.lr=0.02" in line.partition("the nearest")[2] and "0.01" not in line, line


def _with_machine(folder: Path, machine: dict | None, status: str = "ok") -> None:
    record = json.loads((folder / "results.json").read_text())
    record["status"] = status
    if machine is not None:
        record["machine"] = machine
    (folder / "results.json").write_text(json.dumps(record))


def test_report_names_a_seed_a_cell_holds_twice_with_each_runs_machine(tmp_path: Path) -> None:
    """Seed 0 rerun on another CPU pools into the cell (both counted), and the table says so,
    naming each run's machine and AP; an older record without ``machine`` says that; a failed
    rerun of a seed is no repeat."""
    from src.analysis.ablation import load_jobs, machine_name, repeated_seeds

    avx2 = {"cpu": "AMD EPYC 7B13", "cpu_capability": "AVX2", "gpus": [], "threads": 2}
    avx512 = {"cpu": "AMD EPYC 9B14", "cpu_capability": "AVX512", "gpus": [], "threads": 2}
    sweep = tmp_path / "sweep"
    for name, seed, ap, machine, status in (
        ("s0", 0, 0.18, avx2, "ok"), ("s1", 1, 0.19, avx2, "ok"),
        ("s0_again", 0, 0.20, avx512, "ok"), ("s2", 2, 0.16, None, "ok"),
        ("s2_failed", 2, 0.0, avx512, "failed"),
    ):  # fmt: skip
        _fake_job(sweep / name, "faster_rcnn", "p2_only", "f", seed, map=ap)
        _with_machine(sweep / name, machine, status)
    (cell,) = group(load_jobs(sweep))
    assert cell.seeds == [0, 0, 1, 2] and cell.stats("map")[2] == 4
    assert {s: [j["job"] for j in jobs] for s, jobs in repeated_seeds(cell).items()} == {
        0: ["s0", "s0_again"]
    }
    assert machine_name({}) == "machine not recorded"
    # a GPU job is named by the GPUs it ran on; a field asked for is shown
    gpu = {"cpu": "x", "cpu_capability": "AVX2", "gpus": ["NVIDIA H100 80GB HBM3"], "threads": 8}
    assert machine_name({"machine": gpu}, ("threads",)) == "NVIDIA H100 80GB HBM3, threads 8"
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    assert "| (f) p2_only (ours only) | 0,0,1,2 |" in md
    assert (
        "- (f) p2_only, seed 0 × 2: `s0` (AMD EPYC 7B13, AVX2): AP 18.0; "
        "`s0_again` (AMD EPYC 9B14, AVX512): AP 20.0"
    ) in md
    assert "counts every run" in md and "seed 2 ×" not in md
    # same CPU, other thread count: the field that differs is named
    _with_machine(sweep / "s0_again", avx2 | {"threads": 8})
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    assert "`s0` (AMD EPYC 7B13, AVX2, threads 2): AP 18.0; `s0_again` (AMD EPYC 7B13" in md
    # one run per seed: no such note
    (sweep / "s0_again" / "results.json").unlink()
    md = write_report(sweep, tmp_path / "out")["md"].read_text()
    assert "× 2" not in md and "counts every run" not in md


def test_report_by_machine_splits_cells_and_compares_each_with_its_own_fpn(tmp_path) -> None:
    """``--by-machine``: (c) and (f) run on two CPUs are four cells, each named by its machine;
    (f) is marked against the (c) of its own machine only; pooled, a seed run on both machines
    is one cell holding it twice."""
    from src.analysis.ablation import load_jobs

    avx2 = {"cpu": "AMD EPYC 7B13", "cpu_capability": "AVX2", "gpus": [], "threads": 2}
    avx512 = {"cpu": "AMD EPYC 9B14", "cpu_capability": "AVX512", "gpus": [], "threads": 2}
    sweep = tmp_path / "sweep"
    # on AVX2 (f) is far below (c); on AVX-512 within the spread
    for host, machine, c_aps, f_aps in (("h2", avx2, (0.24, 0.23), (0.17, 0.18)),
                                        ("h5", avx512, (0.23, 0.21), (0.21, 0.20))):  # fmt: skip
        for seed in (0, 1):
            for row, variant, aps in (("c", "fpn", c_aps), ("f", "p2_only", f_aps)):
                folder = sweep / f"{host}_{row}_s{seed}"
                _fake_job(folder, "faster_rcnn", variant, row, seed, map=aps[seed])
                _with_machine(folder, machine)
    pooled = group(load_jobs(sweep))
    assert [(c.row, c.seeds) for c in pooled] == [("c", [0, 0, 1, 1]), ("f", [0, 0, 1, 1])]
    split = group(load_jobs(sweep), by_machine=True)
    assert [(c.row, c.label, c.seeds) for c in split] == [
        ("c", "machine=AMD EPYC 7B13, AVX2", [0, 1]), ("c", "machine=AMD EPYC 9B14, AVX512", [0, 1]),
        ("f", "machine=AMD EPYC 7B13, AVX2", [0, 1]), ("f", "machine=AMD EPYC 9B14, AVX512", [0, 1]),
    ]  # fmt: skip
    md = write_report(sweep, tmp_path / "out", by_machine=True)["md"].read_text()
    assert (
        "| (f) p2_only `machine=AMD EPYC 7B13, AVX2` (ours only) | 0,1 | - | - | 17.5 ± 0.7 *" in md
    )
    assert (
        "| (f) p2_only `machine=AMD EPYC 9B14, AVX512` (ours only) | 0,1 | - | - | 20.5 ± 0.7 |"
        in md
    )
    assert "× 2" not in md  # no seed is held twice by a cell
    pooled_md = write_report(sweep, tmp_path / "pooled")["md"].read_text()
    assert "seed 0 × 2" in pooled_md and "--by-machine" in pooled_md and "machine=" not in pooled_md
    proc = run_module("src.report", [str(sweep), "--out", str(tmp_path / "cli"), "--by-machine"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "report.md").read_text() == md
    # a setting that splits the cells as the machines do does not hide the machine's name
    for folder in sweep.glob("h5_*"):
        record = json.loads((folder / "results.json").read_text())
        record["overrides"].append("trainer.precision=bf16-mixed")
        (folder / "results.json").write_text(json.dumps(record))
    labels = {c.label for c in group(load_jobs(sweep), by_machine=True)}
    assert labels == {"machine=AMD EPYC 7B13, AVX2 trainer.precision=-",
                      "machine=AMD EPYC 9B14, AVX512 trainer.precision=bf16-mixed"}  # fmt: skip
    # a run under instruction-set caps rounds as the capped host does: a cell of its own, and
    # pooled, the repeated-seed note tells it from the uncapped run
    capped = avx512 | {"isa_caps": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"}}
    _fake_job(sweep / "h5cap_f_s0", "faster_rcnn", "p2_only", "f", 0, map=0.18)
    _with_machine(sweep / "h5cap_f_s0", capped)
    capped_label = "machine=AMD EPYC 9B14, AVX512, ATEN_CPU_CAPABILITY=avx2, DNNL_MAX_CPU_ISA=AVX2"
    f_cells = [c for c in group(load_jobs(sweep), by_machine=True) if c.row == "f"]
    assert [(c.label.split(" trainer")[0], c.seeds) for c in f_cells] == [
        ("machine=AMD EPYC 7B13, AVX2", [0, 1]), ("machine=AMD EPYC 9B14, AVX512", [0, 1]),
        (capped_label, [0]),
    ]  # fmt: skip
    pooled_md = write_report(sweep, tmp_path / "pooled")["md"].read_text()
    assert "`h5cap_f_s0` (AMD EPYC 9B14, AVX512, ATEN_CPU_CAPABILITY=avx2, " in pooled_md


def test_report_names_a_repeated_rpn_seed_by_its_recall(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _fake_job(tmp_path / "sweep" / name, "rpn", "fpn", "c", 1, ar_1000=0.5, ar_100=0.3)
    md = write_report(tmp_path / "sweep", tmp_path / "out")["md"].read_text()
    assert "- (c) fpn, seed 1 × 2: `a` (machine not recorded): AR1k 50.0;" in md


def test_machine_record_reads_the_cpu_model_and_survives_without_cpuinfo(tmp_path: Path) -> None:
    import torch

    from src.training.machine import cpu_model, describe

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n")
    assert cpu_model(info) == "AMD EPYC 9B14"
    assert cpu_model(tmp_path / "missing") not in ("", None)
    record = describe([])
    assert record["gpus"] == [] and describe()["gpus"] is None  # ran on CPU / not known
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["threads"] == torch.get_num_threads() and record["torch"] == torch.__version__
    json.dumps(record)  # results.json is strict JSON


def test_machine_record_names_the_instruction_set_caps_a_replay_needs(monkeypatch) -> None:
    from src.training.machine import ISA_CAPS, describe

    for name in ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert describe([])["isa_caps"] == {}
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "")  # set but empty: no cap
    assert describe([])["isa_caps"] == {"DNNL_MAX_CPU_ISA": "AVX2"}


def _configured_job(folder: Path, overrides: list[str], seed: int, ap: float) -> None:
    """A finished Faster R-CNN job with the composed config that ``overrides`` give."""
    from omegaconf import OmegaConf

    cfg = compose_train([*overrides, f"seed={seed}"], folder, folder / "data")
    variant = str(cfg.model.variant)
    _fake_job(folder, "faster_rcnn", variant, {"c5": "b", "fpn": "c"}[variant], seed, map=ap)
    record = json.loads((folder / "results.json").read_text())
    record["overrides"] = [*overrides, f"seed={seed}"]
    (folder / "results.json").write_text(json.dumps(record))
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")


def test_report_pools_seeds_by_composed_config_across_folders(tmp_path: Path) -> None:
    """Seeds of one row run in two sessions with different, equivalent overrides (the default
    made explicit; experiment=table3/c_fpn adds only tags) form one cell; another data set, or a
    setting that changes training, is another cell; row (c) of the same data is the reference."""
    from src.analysis.ablation import load_sweeps

    first, second = tmp_path / "session1", tmp_path / "session2"
    _configured_job(first / "c_s0", ["experiment=c_fpn", "trainer.precision=32-true"], 0, 0.24)
    _configured_job(first / "c_s1", ["experiment=c_fpn", "trainer.precision=32-true"], 1, 0.24)
    _configured_job(second / "c_s2", ["experiment=table3/c_fpn", "data=synthetic"], 2, 0.23)
    for seed, ap in enumerate((0.12, 0.13, 0.12)):
        _configured_job(second / f"b_s{seed}", ["experiment=b_c5", "data=synthetic"], seed, ap)
    _configured_job(second / "c_glyphs", ["experiment=c_fpn", "data=glyphs"], 0, 0.31)
    _configured_job(second / "c_lr", ["experiment=c_fpn", "optim.lr=0.01"], 0, 0.05)
    cells = group(load_sweeps([first, second]))
    fpn = [c for c in cells if c.row == "c"]
    assert sorted(len(c.jobs) for c in fpn) == [1, 1, 3]
    pooled = next(c for c in fpn if len(c.jobs) == 3)
    assert pooled.seeds == [0, 1, 2]
    assert {j["job"] for j in pooled.jobs} == {"session1/c_s0", "session1/c_s1", "session2/c_s2"}
    # labels name only what tells the cells apart
    labels = {c.label for c in fpn}
    assert any("data.synthetic.kind=glyphs" in label for label in labels)
    assert any("optim.lr=0.01" in label for label in labels)
    assert "tags" not in " ".join(labels) and "precision" not in " ".join(labels)
    c5 = next(c for c in cells if c.row == "b")
    assert beats_spread(c5, pooled, "map") is True  # reference found: same settings, n = 3
    md = write_report([first, second], tmp_path / "out")["md"].read_text()
    assert "| (c) fpn" in md and "23.7 ± 0.6" in md
    assert "12.3 ± 0.6 *" in md
    with pytest.raises(ValueError, match="--out"):
        write_report([first, second])
    with pytest.raises(ValueError, match="twice"):
        load_sweeps([first, first])
    proc = run_module("src.report", [str(first), str(second)])
    assert proc.returncode != 0 and "--out" in proc.stderr


def test_an_option_added_later_at_null_does_not_split_a_cell(tmp_path: Path) -> None:
    """A job recorded before ``model.rpn_positives_per_box`` existed (its config lacks the key)
    pools with one that has it at null, the default; the cap set to 2 is another cell, named by
    it."""
    from omegaconf import OmegaConf

    from src.analysis.ablation import load_jobs

    _configured_job(tmp_path / "old", ["experiment=c_fpn"], 0, 0.24)
    config = OmegaConf.load(tmp_path / "old" / ".hydra" / "config.yaml")
    del config.model["rpn_positives_per_box"]  # as written before the option was added
    OmegaConf.save(config, tmp_path / "old" / ".hydra" / "config.yaml")
    _configured_job(tmp_path / "new", ["experiment=c_fpn"], 1, 0.23)
    _configured_job(tmp_path / "cap", ["experiment=c_fpn", "model.rpn_positives_per_box=2"], 0, 0.2)
    cells = group(load_jobs(tmp_path))
    assert sorted((c.label, c.seeds) for c in cells) == [
        ("model.rpn_positives_per_box=-", [0, 1]),
        ("model.rpn_positives_per_box=2", [0]),
    ]


def _fake_fast_rcnn_job(folder: Path, *overrides: str) -> None:
    """A finished row (c) Fast R-CNN job run with ``overrides`` besides the row's own."""
    _fake_job(folder, "fast_rcnn", "fpn", "c", 0, map=0.2)
    record = json.loads((folder / "results.json").read_text())
    record["overrides"] += list(overrides)
    (folder / "results.json").write_text(json.dumps(record))


def test_settings_that_split_cells_alike_label_them_once(tmp_path: Path) -> None:
    """Table 2 on two data sets: each set has its own proposal files, so the data set and the
    files tell the same cells apart and one of them (the shortest) names them; a setting that
    splits them otherwise is named too. The figure still draws every cell."""
    from src.analysis.ablation import load_jobs, plot_curves

    for name, kind, lr in (
        ("0", "glyphs", "0.02"),
        ("1", "shapes", "0.02"),
        ("2", "shapes", "0.01"),
    ):
        _fake_fast_rcnn_job(tmp_path / name, f"data.synthetic.kind={kind}", f"optim.lr={lr}",
                            f"data.proposals.train=/study/{kind}_det/proposals_train2017.npz")  # fmt: skip
        (tmp_path / name / "csv").mkdir()
        (tmp_path / name / "csv" / "metrics.csv").write_text(
            "epoch,step,val/map\n0,9,0.1\n1,19,0.2\n"
        )
    cells = group(load_jobs(tmp_path))
    assert sorted(c.label for c in cells) == [
        "data.synthetic.kind=glyphs optim.lr=0.02",
        "data.synthetic.kind=shapes optim.lr=0.01",
        "data.synthetic.kind=shapes optim.lr=0.02",
    ]
    figure = plot_curves(cells, "fast_rcnn", tmp_path / "curves.png")
    assert figure is not None and figure.stat().st_size > 5000


def test_records_without_their_config_are_not_split_by_bookkeeping(tmp_path: Path) -> None:
    """Copied records may lack ``.hydra/config.yaml``: their overrides then place them, less
    the bookkeeping a composed config drops too (``~callbacks.progress_bar``), so that a
    progress bar neither splits a cell nor names proposal files' cells in its place."""
    from src.analysis.ablation import load_jobs

    _fake_fast_rcnn_job(tmp_path / "a0", "data.proposals.train=/study/set_a/p.npz")
    _fake_fast_rcnn_job(tmp_path / "a1", "data.proposals.train=/study/set_a/p.npz",
                        "~callbacks.progress_bar")  # fmt: skip
    _fake_fast_rcnn_job(tmp_path / "f0", "data.proposals.train=/study/set_f/p.npz",
                        "~callbacks.progress_bar", "+callbacks.timer.verbose=true")  # fmt: skip
    cells = group(load_jobs(tmp_path))
    assert sorted((c.label, len(c.jobs)) for c in cells) == [
        ("data.proposals.train=…/set_a/…", 2),
        ("data.proposals.train=…/set_f/…", 1),
    ]


def test_proposal_files_that_tell_cells_apart_are_named_by_their_folder(tmp_path: Path) -> None:
    """Two proposal files for one data set (an RPN rerun) split its cells: the label names the
    folder that differs, not the whole path, and keeps the data set."""
    from src.analysis.ablation import load_jobs

    for name, kind, folder in (
        ("0", "glyphs", "glyphs_det"),
        ("1", "shapes", "shapes_det"),
        ("2", "shapes", "shapes_det_b"),
    ):
        _fake_fast_rcnn_job(tmp_path / name, f"data.synthetic.kind={kind}",
                            f"data.proposals.train=/study/{folder}/proposals_train2017.npz")  # fmt: skip
    assert sorted(c.label for c in group(load_jobs(tmp_path))) == [
        "data.proposals.train=…/glyphs_det/… data.synthetic.kind=glyphs",
        "data.proposals.train=…/shapes_det/… data.synthetic.kind=shapes",
        "data.proposals.train=…/shapes_det_b/… data.synthetic.kind=shapes",
    ]


def test_curves_show_ar100_where_no_run_logged_ar1000(tmp_path: Path) -> None:
    """A Faster R-CNN kept < 1000 test proposals logs no AR@1000: its figure draws AR@100."""
    from src.analysis.ablation import curve_panels, load_jobs

    def job(name: str, columns: dict[str, float]) -> None:
        _fake_job(tmp_path / name, "faster_rcnn", "fpn", "c", int(name), map=0.1)
        (tmp_path / name / "csv").mkdir()
        header = ["epoch", "step", *columns]
        rows = [[str(e), "9", *(str(v * (e + 1)) for v in columns.values())] for e in range(2)]
        (tmp_path / name / "csv" / "metrics.csv").write_text(
            "\n".join(",".join(r) for r in [header, *rows]) + "\n"
        )

    job("0", {"val/map": 0.1, "val/ar_100": 0.2})
    cells = group(load_jobs(tmp_path))
    assert [c for c, _ in curve_panels(cells, "faster_rcnn")] == [
        "val/map", "val/map_small", "val/ar_100", "train/loss"]  # fmt: skip
    job("1", {"val/map": 0.1, "val/ar_100": 0.2, "val/ar_1000": 0.3})
    cells = group(load_jobs(tmp_path))
    assert "val/ar_1000" in [c for c, _ in curve_panels(cells, "faster_rcnn")]


def _loss_job(
    folder: Path, variant: str, row: str, seed: int, classifier: list[float], box_reg: list[float]
) -> None:
    """A finished Table 2 job whose metrics.csv logged these losses, one per 10 steps, with a
    validation row after every 4 and the lines of its second half written first (as after a
    resume): the report must read them in step order."""
    _fake_job(folder, "fast_rcnn", variant, row, seed, map=0.1)
    lines = []
    for i, (c, b) in enumerate(zip(classifier, box_reg)):
        lines.append(f"{i // 4},{10 * i + 9},{c + b},{c},{b},")
        if i % 4 == 3:
            lines.append(f"{i // 4},{10 * i + 9},,,,0.1")
    half = len(lines) // 2
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,train/loss_classifier,train/loss_box_reg,val/map\n"
        + "\n".join(lines[half:] + lines[:half])
        + "\n"
    )


def test_report_shows_where_each_loss_term_starts_and_ends_over_seeds(tmp_path: Path) -> None:
    """A row whose classifier learns and box regression stalls, beside one where both learn:
    the report gives each term's first and last logged values (means over --loss-steps),
    pooled over seeds, in report.md, losses.csv and per job in report.csv."""
    falling = [1.0 - 0.04 * i for i in range(12)]  # 1.00, 0.96 ... 0.56
    flat = [0.7] * 12
    _loss_job(tmp_path / "sweep" / "0", "fpn", "c", 0, falling, falling)
    _loss_job(tmp_path / "sweep" / "1", "fpn", "c", 1, [v + 0.1 for v in falling], falling)
    _loss_job(tmp_path / "sweep" / "2", "c5", "b", 0, falling, flat)
    paths = write_report(tmp_path / "sweep", tmp_path / "out", loss_steps=2)
    md = paths["md"].read_text()
    # first two: (1.00 + 0.96) / 2; last two: (0.60 + 0.56) / 2; seed 1's classifier 0.1 above
    assert "| row | seeds | loss | loss_classifier | loss_box_reg |" in md
    assert (
        "| (c) fpn | 0,1 | 2.01 ± 0.07 → 1.21 ± 0.07 | 1.03 ± 0.07 → 0.63 ± 0.07 "
        "| 0.98 ± 0.00 → 0.58 ± 0.00 |" in md
    )
    assert "| (b) c5 | 0 | 1.68 → 1.28 | 0.98 → 0.58 | 0.70 → 0.70 |" in md
    assert md.index("## Table 2") < md.index("loss_classifier") < md.index("curves_fast_rcnn.png")
    with paths["losses"].open() as f:
        rows = {(r["row"], r["term"]): r for r in csv.DictReader(f)}
    box = rows[("c", "train/loss_box_reg")]
    assert float(box["start_mean"]) == pytest.approx(0.98)
    assert float(box["end_mean"]) == pytest.approx(0.58)
    assert (box["n"], box["logged"], box["steps"], box["seeds"]) == ("2", "12", "2", "0 1")
    with paths["csv"].open() as f:
        jobs = {r["job"]: r for r in csv.DictReader(f)}
    assert float(jobs["1"]["loss_classifier_start"]) == pytest.approx(1.08)
    assert float(jobs["2"]["loss_box_reg_end"]) == pytest.approx(0.7)
    # the default averages 10 values at each end: 1 - 0.04 * 4.5 and 1 - 0.04 * 6.5
    md10 = write_report(tmp_path / "sweep", tmp_path / "out10")["md"].read_text()
    # 12 values, fewer than 2 x 10: the two means share some, which the table marks
    assert "| (b) c5 | 0 | 1.52 → 1.44 † | 0.82 → 0.74 † | 0.70 → 0.70 † |" in md10
    assert not [r for r in md.splitlines() if r.startswith("| (") and "†" in r]  # 12 >= 2 x 2
    proc = run_module("src.report", [str(tmp_path / "sweep"), "--loss-steps", "0"])
    assert proc.returncode != 0 and "loss steps must be a whole number" in proc.stderr
    assert not (tmp_path / "sweep" / "report.md").exists()


def test_loss_table_names_the_seeds_behind_each_term_and_refuses_a_bad_value(tmp_path) -> None:
    """Seeds 0-2 of one row: seed 1 has no metrics.csv, seed 2 logged no box term, seed 0 logged
    step 9 twice (the later line counts) and only 3 values; a failed job does not pool but keeps
    its columns in report.csv. A value that is not a number is refused naming file, line, column."""
    sweep = tmp_path / "sweep"
    header = "epoch,step,train/loss_classifier,train/loss_box_reg,train/loss_epoch\n"
    for seed, text in ((0, "0,9,5.0,5.0,\n0,9,1.0,0.5,\n0,19,0.8,0.4,\n0,29,0.6,0.3,9.0\n"),
                       (1, None), (2, "0,9,1.2,,\n0,19,1.0,,\n0,29,0.8,,\n0,39,0.6,,\n")):  # fmt: skip
        _fake_job(sweep / str(seed), "fast_rcnn", "fpn", "c", seed, map=0.1)
        if text is not None:
            (sweep / str(seed) / "csv").mkdir()
            (sweep / str(seed) / "csv" / "metrics.csv").write_text(header + text)
    _fake_job(sweep / "3", "fast_rcnn", "fpn", "c", 3, map=0.1)
    record = json.loads((sweep / "3" / "results.json").read_text())
    (sweep / "3" / "results.json").write_text(json.dumps(record | {"status": "failed"}))
    (sweep / "3" / "csv").mkdir()
    (sweep / "3" / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss_objectness\n0,9,0.7\n0,19,0.5\n"
    )
    paths = write_report(sweep, tmp_path / "out", loss_steps=2)
    md = paths["md"].read_text()
    assert "| row | seeds | loss_classifier | loss_box_reg |" in md  # no epoch aggregate
    # classifier: seed 0 (1.0+0.8)/2 -> (0.8+0.6)/2, seed 2 (1.2+1.0)/2 -> (0.8+0.6)/2
    assert (
        "| (c) fpn | 0,1,2 | 1.00 ± 0.14 → 0.70 ± 0.00 (seeds 0,2) † | 0.45 → 0.35 (seeds 0) † |"
        in md
    )
    with paths["csv"].open() as f:
        jobs = {r["job"]: r for r in csv.DictReader(f)}
    assert float(jobs["3"]["loss_objectness_start"]) == pytest.approx(0.6)  # the failed job's
    assert jobs["1"]["loss_classifier_start"] == "" and jobs["2"]["loss_box_reg_end"] == ""
    with paths["losses"].open() as f:
        rows = {r["term"]: r for r in csv.DictReader(f)}
    assert "train/loss_objectness" not in rows  # only the failed job logged it
    assert (rows["train/loss_box_reg"]["seeds"], rows["train/loss_box_reg"]["logged"]) == ("0", "3")
    bad = sweep / "2" / "csv" / "metrics.csv"
    bad.write_text(header + "0,9,abc,,\n")
    proc = run_module("src.report", [str(sweep), "--out", str(tmp_path / "bad")])
    assert proc.returncode == 2
    assert (
        f"{bad}, line 2: column 'train/loss_classifier'" in proc.stderr and "'abc'" in proc.stderr
    )


@pytest.fixture(scope="module")
def seeded_sweep(data_dir, module_tmp) -> Path:
    """A real Table 1 sweep: rows (b) and (c), seeds 0 and 1, one epoch each."""
    sweep = module_tmp("seeded") / "sweep"
    proc = run_module(
        "src.train",
        ["-m", *FAST, "test=false", "experiment=table1/c_fpn,table1/b_c5", "seed=0,1",
         "trainer.log_every_n_steps=1",
         f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_report_of_a_real_sweep_pools_its_seeds_and_draws_curves(seeded_sweep, tmp_path) -> None:
    paths = write_report(seeded_sweep, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| (c) fpn | 0,1 |" in md and "| (b) c5 | 0,1 |" in md and "±" in md
    assert paths["curves_rpn"].stat().st_size > 5000
    lines = paths["cells"].read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith("rpn,")
    # the figure's numbers: (c)'s AR@100 per epoch is the mean of its two seeds' metrics.csv
    with paths["curves_rpn_csv"].open() as f:
        points = [r for r in csv.DictReader(f) if r["row"] == "c" and r["column"] == "val/ar_100"]
    logged = []
    for job in sorted(j for j in seeded_sweep.iterdir() if (j / "results.json").is_file()):
        if results(job)["row"] == "c":
            with (job / "csv" / "metrics.csv").open() as f:
                logged.append(
                    [float(r["val/ar_100"]) for r in csv.DictReader(f) if r["val/ar_100"]]
                )
    assert len(logged) == 2 and points and all(p["n"] == "2" for p in points)
    assert float(points[-1]["mean"]) == pytest.approx((logged[0][-1] + logged[1][-1]) / 2)
    # and each loss term's epoch mean, beyond the figure's four curves
    with paths["curves_rpn_csv"].open() as f:
        drawn = {r["column"] for r in csv.DictReader(f)}
    assert {"train/loss", "train/loss_objectness", "train/loss_rpn_box_reg"} <= drawn
    # where the training loss starts and ends: the mean of each seed's first and last 3 of its 8
    # logged values, pooled over the two seeds
    paths = write_report(seeded_sweep, tmp_path / "losses", loss_steps=3)
    with paths["losses"].open() as f:
        loss = next(r for r in csv.DictReader(f) if r["row"] == "c" and r["term"] == "train/loss")
    first, last = [], []
    for job in sorted(j for j in seeded_sweep.iterdir() if (j / "results.json").is_file()):
        if results(job)["row"] == "c":
            with (job / "csv" / "metrics.csv").open() as f:
                values = [float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]]
            assert len(values) == 8
            first.append(sum(values[:3]) / 3)
            last.append(sum(values[-3:]) / 3)
    assert loss["n"] == "2" and float(loss["start_mean"]) == pytest.approx(sum(first) / 2)
    assert float(loss["end_mean"]) == pytest.approx(sum(last) / 2)
    md = paths["md"].read_text()  # Table 1 trains the RPN alone: its two terms and their sum
    assert "| row | seeds | loss | loss_objectness | loss_rpn_box_reg |" in md


def test_ablation_notebook_runs_on_a_sweep(seeded_sweep, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("FPN_SWEEP_DIR", str(seeded_sweep))
    root = Path(__file__).resolve().parents[1]
    notebook = nbformat.read(root / "notebooks" / "ablation.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root)}}).execute()  # fmt: skip
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
        for c in notebook.cells for o in c.get("outputs", [])
    )  # fmt: skip
    assert "4 jobs" in text and "## Table 1" in text and "(b) c5" in text
    assert "| row | seeds | loss | loss_objectness | loss_rpn_box_reg |" in text
    images = [o for c in notebook.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]  # fmt: skip
    assert images, "the curves were not drawn"


def test_every_curve_of_a_crowded_figure_has_its_own_style() -> None:
    """The study's Table 3 figure holds 16 cells: six rows on two data sets, two rows also on a
    second host. Matplotlib's colour cycle repeats after ten, which drew (a) on glyphs and (d)
    on glyphs in one colour; now the colour says the row and the line/marker the settings."""
    from src.analysis.ablation import Cell, curve_styles

    labels = ["kind=glyphs host=cpu", "kind=glyphs host=gpu", "kind=shapes host=cpu",
              "kind=shapes host=gpu"]  # fmt: skip
    cells = [Cell("faster_rcnn", v, r, label)
             for r, v in zip("abcdef", ["c4", "c5", "fpn", "bottom_up", "no_lateral", "p2_only"])
             for label in (labels if r in "ac" else labels[::2])]  # fmt: skip
    assert len(cells) == 16
    styles = curve_styles(cells)
    drawn = [
        (s["color"], s["linestyle"], s["marker"]) for s in map(styles.__getitem__, map(id, cells))
    ]
    assert len(set(drawn)) == len(cells)
    for cell in cells:
        style = styles[id(cell)]
        assert style["color"] == f"C{'abcdef'.index(cell.row)}"  # a row keeps one hue
        same_label = [styles[id(c)] for c in cells if c.label == cell.label]
        assert {(s["linestyle"], s["marker"]) for s in same_label} == {
            (style["linestyle"], style["marker"])
        }
    # 24 settings in one row still give 24 different lines; an unknown row takes a free colour
    many = [Cell("rpn", "fpn", "c", f"optim.lr={i}") for i in range(24)]
    many.append(Cell("rpn", "custom", None, "optim.lr=0"))
    styles = curve_styles(many)
    assert (
        len({(s["linestyle"], s["marker"]) for s in map(styles.__getitem__, map(id, many[:24]))})
        == 24
    )
    assert styles[id(many[-1])]["color"] == "C6"


def test_checkpoints_kept_besides_the_best_do_not_split_a_cell(tmp_path: Path) -> None:
    """A seed run before last.ckpt had its own callback (model_checkpoint.save_last=true, no
    last_checkpoint) pools with seeds run after it; the checkpoint monitored is what is tested,
    so a different mode is another cell."""
    before = [
        "experiment=c_fpn",
        "+callbacks.model_checkpoint.save_last=true",
        "~callbacks.last_checkpoint",
    ]
    _configured_job(tmp_path / "c_s0", before, 0, 0.24)
    _configured_job(tmp_path / "c_s1", ["experiment=c_fpn"], 1, 0.25)
    _configured_job(
        tmp_path / "c_min", ["experiment=c_fpn", "callbacks.model_checkpoint.mode=min"], 0, 0.1
    )
    cells = [c for c in group(load_jobs(tmp_path)) if c.row == "c"]
    assert sorted(len(c.jobs) for c in cells) == [1, 2]
    assert next(c for c in cells if len(c.jobs) == 2).seeds == [0, 1]
    assert any("mode" in c.label for c in cells) and not any("save_last" in c.label for c in cells)
