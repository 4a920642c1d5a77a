"""Faults and bad input through the real entry points: a checkpoint never runs code, a diverged
run fails loudly and keeps its last good checkpoint, resuming keeps history, a sweep says when
a job failed, a mistyped data root is an error, skipped images are counted."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from run_helpers import REPO, TINY, compose_train, helper_callback, results, run_module

from src.train import strict_json, train
from src.training.checkpoints import CheckpointError, load_checkpoint
from src.training.config import ConfigError

QUICK = [*TINY, "trainer.max_epochs=1", "test=false"]
HELPERS = {"PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}  # run_helpers callbacks


@pytest.fixture(scope="module")
def data_dir(module_tmp) -> Path:
    from src.data.synthetic import ensure_synthetic

    root = module_tmp("data")
    ensure_synthetic(root / "synthetic", num_train=16, num_val=8, image_size=128, seed=0)
    return root


class _RunsCode:
    """Unpickling this calls os.system: what a malicious .ckpt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil_ckpt(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    torch.save(
        {"hyper_parameters": {"detector": {}, "categories": []}, "x": _RunsCode(marker)}, path
    )
    return path, marker


@pytest.mark.parametrize("entry", ["src.train", "src.eval", "src.predict"])
def test_a_checkpoint_that_would_run_code_is_refused_by_every_entry_point(
    entry, evil_ckpt, tmp_path, data_dir
):
    path, marker = evil_ckpt
    args = {"src.train": [*QUICK, f"paths.data_dir={data_dir}"],
            "src.eval": [f"paths.data_dir={data_dir}", *TINY[:3]],
            "src.predict": [f"input={data_dir / 'synthetic' / 'val2017'}"]}[entry]  # fmt: skip
    proc = run_module(entry, [*args, f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode != 0
    assert "holds objects other than tensors and plain values" in proc.stderr, proc.stderr[-3000:]
    assert str(path) in proc.stderr
    assert not marker.exists(), "unpickling the checkpoint ran code"


def test_a_text_file_is_not_a_pytorch_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("these are my notes, not weights\n" * 10)
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_our_checkpoints_hold_only_tensors_and_plain_values(tmp_path, data_dir):
    train(compose_train([*QUICK, "data.max_images=2"], tmp_path, data_dir))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["variant_spec"]["variant"] == "fpn" and ckpt["hyper_parameters"]["detector"]


def _strict(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_diverging_run_stops_at_the_step_fails_and_writes_strict_json(tmp_path, data_dir):
    run = tmp_path / "run"
    proc = run_module(
        "src.train",
        [*QUICK, "trainer.max_epochs=2", "optim.lr=1e6", f"paths.data_dir={data_dir}",
         f"hydra.run.dir={run}"],
    )  # fmt: skip
    assert proc.returncode != 0
    record = _strict(run / "results.json")
    assert record["status"] == "failed"
    assert "DivergedError: training diverged at step" in record["error"]
    assert "non-finite" in record["error"] and "loss_" in record["error"]
    assert "training diverged at step" in proc.stderr
    # it stopped at that step: no epoch finished, so no checkpoint of NaN weights exists
    assert not list(run.glob("checkpoints/*.ckpt"))


def test_a_run_that_diverges_later_keeps_its_last_finite_checkpoint(tmp_path, data_dir):
    run = tmp_path / "run"
    poison = helper_callback("poison", "PoisonLearningRate", epoch=1)
    proc = run_module(
        "src.train",
        [*QUICK, "trainer.max_epochs=3", *poison, f"paths.data_dir={data_dir}",
         f"hydra.run.dir={run}"],
        env=HELPERS,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "diverged" in _strict(run / "results.json")["error"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # the end of the last good epoch, never overwritten
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )


def test_results_json_is_strict_even_with_nan_metrics():
    record = strict_json({"metrics": {"val/map": float("nan"), "x": [1.0, float("inf")]}})
    assert record == {"metrics": {"val/map": None, "x": [1.0, None]}}


def _rows(run: Path) -> list[dict]:
    with (run / "csv" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_resuming_in_the_same_folder_keeps_the_history(tmp_path, data_dir):
    run = tmp_path / "run"
    common = [*QUICK, "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
              f"paths.data_dir={data_dir}", f"hydra.run.dir={run}"]  # fmt: skip
    stop = helper_callback("stop", "StopAfterEpochs", epochs=1)
    first = run_module("src.train", [*common, *stop], env=HELPERS)
    assert first.returncode == 0, first.stderr[-3000:]
    # quiet logs: no product tips, no third-party deprecation repeated per batch
    assert "Tip:" not in first.stdout + first.stderr
    assert "LeafSpec" not in first.stderr
    before = _rows(run)
    assert {r["epoch"] for r in before if r.get("epoch")} == {"0"}
    # what a kill after the checkpoint leaves behind: a row and a panel the checkpoint lacks
    late = dict.fromkeys(before[0], "")
    late |= {"epoch": "1", "step": "999", "train/loss": "123.0"}
    with (run / "csv" / "metrics.csv").open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(before[0])).writerow(late)
    (run / "csv" / "predictions" / "epoch_001.png").write_bytes(b"stale")
    log_before = (run / "train.log").read_text()

    resumed = run_module("src.train", [*common, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _rows(run)
    epoch0 = [r for r in after if r.get("epoch") == "0"]
    assert [r["train/loss"] for r in epoch0 if r.get("train/loss")] == [
        r["train/loss"] for r in before if r.get("train/loss")
    ]
    assert any(r.get("epoch") == "1" for r in after)
    assert "123.0" not in {r.get("train/loss") for r in after}
    logged = [
        (r["step"], k) for r in after for k, v in r.items() if v and k not in ("step", "epoch")
    ]
    assert len(logged) == len(set(logged)), "a step was logged twice"
    panel = run / "csv" / "predictions" / "epoch_001.png"
    assert panel.stat().st_size > 100  # drawn again, not the stale one
    assert (run / "csv" / "predictions" / "epoch_000.png").is_file()
    assert (run / "train.log").read_text().startswith(log_before)


def test_a_job_stopped_by_sigterm_exits_143_and_says_where_to_resume(tmp_path, data_dir):
    """Lightning alone exits 0 on SIGTERM and writes nothing: a preempted job looked finished."""
    run = tmp_path / "run"
    sigterm = helper_callback("sigterm", "SigtermAtEpoch", epoch=1)
    proc = run_module(
        "src.train",
        [*QUICK, "trainer.max_epochs=2", *sigterm, f"paths.data_dir={data_dir}", f"hydra.run.dir={run}"],
        env=HELPERS,
    )  # fmt: skip
    assert proc.returncode == 128 + 15, proc.stderr[-3000:]
    record = results(run)
    last = run / "checkpoints" / "last.ckpt"
    assert record["status"] == "interrupted"
    assert record["error"] == f"SIGTERM before the end; resume with ckpt_path={last}"
    assert record["wall_time_s"] > 0 and "metrics" not in record
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the epoch that finished


def test_an_entry_point_stopped_by_sigterm_exits_143_not_0(capsys):
    """src.eval, src.predict and src.proposals run through cli.run as src.train does: when
    Lightning turns SIGTERM into its bare SystemExit (status 0), the command exits 143."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from src.training import cli

    def stopped():
        raise SIGTERMException

    with pytest.raises(SystemExit) as stop:
        cli.run(stopped)
    assert stop.value.code == 143
    assert capsys.readouterr().err == "stopped by SIGTERM before the end\n"
    with pytest.raises(SystemExit) as finished:  # any other exit is left as it was
        cli.run(lambda: sys.exit(0))
    assert finished.value.code == 0


def test_a_sweep_with_a_failed_job_exits_non_zero_after_every_job(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        ["-m", *QUICK, "data.max_images=2", "fpn.levels=[p6],[p2]", f"paths.data_dir={data_dir}",
         f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert results(sweep / "0")["status"] == "failed"
    assert results(sweep / "1")["status"] == "ok"  # the job after the failure ran
    assert "1 job(s) of the sweep" in proc.stdout + proc.stderr


def test_a_mistyped_synthetic_root_is_an_error_not_a_new_dataset(tmp_path, data_dir):
    typo = tmp_path / "synthetc"
    cfg = compose_train([*QUICK, f"data.root={typo}"], tmp_path / "run", data_dir)
    with pytest.raises(ConfigError, match=r"data\.root=.*synthetc.*no such folder.*generate=true"):
        train(cfg)
    assert not typo.exists()
    # asked for, it is made there
    cfg = compose_train(
        [*QUICK, "data.max_images=2", f"data.root={typo}", "data.synthetic.generate=true"],
        tmp_path / "run2",
        data_dir,
    )
    assert math.isfinite(train(cfg).metrics["train/loss"])
    assert (typo / "annotations" / "instances_train2017.json").is_file()


def test_skipped_unreadable_images_are_counted_in_results(coco_writer, tmp_path):
    images = [{"id": k, "file_name": f"{k:012d}.jpg", "width": 64, "height": 48} for k in (1, 2, 3)]
    images[1]["data"] = b"not a jpeg"
    anns = [{"id": k, "image_id": k, "category_id": 3, "bbox": [4, 4, 20, 20]} for k in (1, 2, 3)]
    root = coco_writer(tmp_path / "coco", "train2017", images, anns)
    run = tmp_path / "run"
    proc = run_module(
        "src.train",
        ["data=coco_tiny", f"data.root={root}", "data.val_split=train2017",
         "data.on_bad_image=skip", "data.batch_size=1", "model.min_size=64", "model.max_size=64",
         "backbone=simple", "trainer.max_epochs=1", "test=false", "~callbacks.progress_bar",
         "callbacks.prediction_panel.num_images=0", f"hydra.run.dir={run}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results(run)["skipped_images"] == {"train": 1, "val": 1}
