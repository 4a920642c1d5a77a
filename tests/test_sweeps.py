"""Multirun sweeps, DDP on CPU (gloo), W&B offline runs and the ablation report, through the
real command lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_helpers import REPO, TINY, results, run_module

from src.report import write_report

FAST = [*TINY, "trainer.max_epochs=1", "test=false"]


@pytest.fixture(scope="module")
def data_dir(module_tmp) -> Path:
    from src.data.synthetic import ensure_synthetic

    root = module_tmp("data")
    ensure_synthetic(root / "synthetic", num_train=16, num_val=8, image_size=128, seed=0)
    return root


def test_ddp_cpu_two_processes_validate_every_image_once(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = run_module(
        "src.train",
        [*FAST, "trainer=ddp_cpu", "data.val_batch_size=3", f"paths.data_dir={data_dir}",
         f"hydra.run.dir={out}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    record = results(out)
    assert record["status"] == "ok"
    # 8 images over 2 ranks in batches of 3: no rank pads or repeats an image
    assert record["metrics"]["val/images"] == 8


def test_multirun_with_default_folders_writes_under_the_launch_folder(tmp_path, data_dir):
    """`python -m src.train -m ...` as users type it: no hydra.sweep.dir given, so the sweeper
    must resolve the default sweep folder (under outputs/ of the folder it was started in)."""
    command = [sys.executable, "-m", "src.train", "-m", *FAST, "model.variant=fpn",
               f"paths.data_dir={data_dir}"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (job,) = (tmp_path / "outputs" / "train" / "multiruns").glob("*/0")
    assert results(job)["status"] == "ok"


@pytest.mark.slow
def test_slurm_tasks_are_wired_by_lightning_from_slurm_variables(tmp_path, data_dir):
    """Two tasks started the way srun starts them (scripts/fake_srun.sh): Lightning must take
    ranks from SLURM's variables instead of launching processes of its own."""
    out = tmp_path / "run"
    command = [str(REPO / "scripts" / "fake_srun.sh"), "2", sys.executable, "-m", "src.train",
               *FAST, "trainer=ddp_cpu", f"paths.data_dir={data_dir}", f"hydra.run.dir={out}"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "cluster environment SLURMEnvironment, world size 2" in proc.stdout + proc.stderr
    record = results(out)
    assert record["status"] == "ok"
    assert record["metrics"]["val/images"] == 8


@pytest.mark.slow
def test_multirun_of_ddp_jobs_gives_each_job_its_folder_and_wandb_run(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        ["-m", *FAST, "trainer=ddp_cpu", "logger=wandb", "model.variant=fpn,c5",
         f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
        timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for job, variant in (("0", "fpn"), ("1", "c5")):
        record = results(sweep / job)
        assert record["status"] == "ok" and record["variant"] == variant
        assert record["metrics"]["val/images"] == 8
        runs = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs


def test_failed_job_is_recorded_and_the_sweep_goes_on_and_the_report_shows_it(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        # c4 has no pyramid, so explicit pyramid levels make its job fail (and only its job)
        ["-m", *FAST, "model.variant=c4,no_lateral,fpn", "fpn.levels=[p2,p3,p4,p5,p6]",
         f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    # every job ran, then the sweep said that one failed
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-5000:]
    failed, no_lateral, fpn = (results(sweep / j) for j in ("0", "1", "2"))
    assert failed["status"] == "failed" and "model.variant" in failed["error"]
    assert (sweep / "0" / "error.log").is_file()
    # which machine ran each job, failed or not (the report names it beside a repeated seed);
    # these ran on CPU: no GPU named, and for the failed job which devices it had is not known
    for record in (failed, no_lateral, fpn):
        machine = record["machine"]
        assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert machine["torch"] == torch.__version__ and machine["threads"] >= 1
    assert no_lateral["machine"]["gpus"] == [] and failed["machine"]["gpus"] is None
    # what the built model was, as results.json records it
    assert no_lateral["status"] == "ok"
    assert (no_lateral["variant"], no_lateral["row"], no_lateral["lateral"]) == (
        "no_lateral",
        "e",
        False,
    )
    assert fpn["status"] == "ok" and (fpn["variant"], fpn["row"], fpn["lateral"]) == (
        "fpn",
        "c",
        True,
    )

    paths = write_report(sweep, tmp_path / "report")
    md = paths["md"].read_text()
    assert "(e) no_lateral" in md and "(c) fpn" in md
    assert "56.9" in md  # the paper's FPN AP@0.5 (Table 3) beside ours
    # FAST keeps 150 proposals at test: no AR@1000 measured, so no Table 1 beside this sweep
    assert "46.1" not in md
    assert "Failed jobs" in md and "model.variant" in md
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 4  # header + three jobs
    assert paths["png"].stat().st_size > 1000
    ours = float(json.loads((sweep / "2" / "results.json").read_text())["metrics"]["val/map_50"])
    assert f"{100 * ours:.1f}" in md


def test_report_cli_refuses_a_folder_without_results(tmp_path):
    proc = run_module("src.report", [str(tmp_path)])
    assert proc.returncode != 0
    assert "results.json" in proc.stderr
