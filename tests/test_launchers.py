"""Hydra's launchers and the Optuna sweeper through the real command lines: submitit's local
executor, joblib (jobs side by side), submitit's SLURM executor on a faked one-node SLURM
(tests/fake_slurm.py: array jobs, srun tasks as DDP ranks), an Optuna search, and the launcher
settings that cannot run a job's ranks, refused before anything runs."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from run_helpers import REPO, TINY, results, run_module

from src.report import write_report
from src.train import objective
from src.training.ddp import launcher_problem

FAST_DEV = [*TINY, "debug=fast_dev_run"]  # one training and one validation batch per job
FAST = [*TINY, "trainer.max_epochs=1", "test=false"]  # one epoch: loggers are on


@pytest.fixture(scope="module")
def data_dir(module_tmp) -> Path:
    from src.data.synthetic import ensure_synthetic

    root = module_tmp("data")
    ensure_synthetic(root / "synthetic", num_train=16, num_val=8, image_size=128, seed=0)
    return root


def _assert_jobs_ok(sweep: Path, variants: tuple[str, ...], proc) -> list[dict]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = [results(sweep / str(n)) for n in range(len(variants))]
    for record, variant in zip(records, variants):
        assert record["status"] == "ok" and record["variant"] == variant, record
    return records


def _report_reads(sweep: Path, variants: tuple[str, ...]) -> None:
    proc = run_module("src.report", [str(sweep)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (sweep / "report.md").read_text()
    for variant in variants:
        assert variant in md


def _ran_side_by_side(sweep: Path) -> bool:
    """Job 1 started (its .hydra/config.yaml) before job 0 ended (its results.json), and so on."""
    spans = [
        ((sweep / j / ".hydra" / "config.yaml").stat().st_mtime,
         (sweep / j / "results.json").stat().st_mtime)
        for j in ("0", "1")
    ]  # fmt: skip
    (start0, end0), (start1, end1) = spans
    return start1 < end0 and start0 < end1


def test_submitit_local_sweep_gives_each_job_its_folder_and_the_report_reads_them(
    tmp_path, data_dir
):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        ["-m", "hydra/launcher=submitit_local", *FAST_DEV, "model.variant=fpn,c5",
         f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    _assert_jobs_ok(sweep, ("fpn", "c5"), proc)
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # submitit's own files, aside
    _report_reads(sweep, ("fpn", "c5"))


def test_joblib_runs_jobs_side_by_side_each_in_its_folder(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST_DEV,
         "model.variant=fpn,c5", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    _assert_jobs_ok(sweep, ("fpn", "c5"), proc)
    assert _ran_side_by_side(sweep)
    md = write_report(sweep, tmp_path / "report")["md"].read_text()
    assert "fpn" in md and "c5" in md


@pytest.mark.slow
def test_joblib_runs_ddp_jobs_side_by_side_each_with_its_ranks_and_wandb_run(tmp_path, data_dir):
    """Two 2-rank DDP jobs at once in joblib's worker processes: each starts its own children
    (src/training/ddp.py), validates every image once, and has its own W&B run."""
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer=ddp_cpu", *FAST,
         "logger=wandb", "model.variant=fpn,c5", f"paths.data_dir={data_dir}",
         f"hydra.sweep.dir={sweep}"],
        timeout=500,
    )  # fmt: skip
    records = _assert_jobs_ok(sweep, ("fpn", "c5"), proc)
    assert _ran_side_by_side(sweep)
    for job, record in enumerate(records):
        assert record["metrics"]["val/images"] == 8
        assert (sweep / str(job) / "train_ddp_rank1.log").is_file()
        runs = list((sweep / str(job) / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs


def test_slurm_launcher_config_has_our_defaults():
    proc = run_module(
        "src.train", ["hydra/launcher=slurm", "--cfg", "hydra", "--package", "hydra.launcher"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = OmegaConf.create(yaml.safe_load(proc.stdout))
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.nodes, launcher.gpus_per_node) == ("gpu", 1, 8)
    assert launcher.tasks_per_node == 8  # one SLURM task per GPU: the DDP ranks
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == (1440, 6, 256)


@pytest.mark.slow
def test_slurm_array_jobs_are_ddp_runs_wired_from_slurm_variables(tmp_path, data_dir):
    """submitit's real SLURM path (sbatch array, srun tasks) on tests/fake_slurm.py: each job
    is one array task whose two srun tasks Lightning's SLURMEnvironment makes its ranks."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("sbatch", "srun", "sacct"):
        wrapper = bin_dir / command
        wrapper.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" "{REPO}/tests/fake_slurm.py" {command} "$@"\n'
        )
        wrapper.chmod(0o755)
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        ["-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.tasks_per_node=2", "trainer=ddp_cpu", *FAST_DEV, "model.variant=fpn,c5",
         f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    records = _assert_jobs_ok(sweep, ("fpn", "c5"), proc)
    for job, record in enumerate(records):
        log = (sweep / str(job) / "train.log").read_text()
        assert "cluster environment SLURMEnvironment, world size 2" in log
        assert record["metrics"]["val/images"] == 4  # one batch of 2 on each of the 2 ranks
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    sbatch = set(re.findall(r"^#SBATCH (\S+)", script.read_text(), re.M))
    assert {"--array=0-1%2", "--ntasks-per-node=2", "--partition=gpu", "--time=1440",
            "--cpus-per-task=6", "--mem=256GB"} <= sbatch  # fmt: skip


def test_optuna_search_writes_its_best_trial(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    searched = "model.box_batch_size_per_image"  # TINY fixes it; here it is searched
    proc = run_module(
        "src.train",
        ["hparams_search=demo_optuna", "hydra.sweeper.n_trials=2", "debug=fast_dev_run",
         *(a for a in TINY if not a.startswith(searched)), f"paths.data_dir={data_dir}",
         f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "optim.lr", "backbone.norm", "model.representation_size", searched
    }  # fmt: skip
    trials = [results(sweep / j) for j in ("0", "1")]
    assert all(t["status"] == "ok" for t in trials)
    chosen = [f"{k}={v}" for k, v in best["best_params"].items()]
    (winner,) = [t for t in trials if set(chosen) <= set(t["overrides"])]
    assert best["best_value"] == pytest.approx(winner["metrics"]["val/map"])


def test_a_job_without_its_metric_is_a_failed_optuna_trial():
    """What main returns when the optimized metric is missing, and what hydra-optuna-sweeper
    1.3 does with it: tell() refuses NaN, so the trial is told FAIL and the study goes on."""
    value = objective({"val/map_50": 0.1}, "val/map")
    assert math.isnan(value)
    assert objective({"val/map": 0.25}, "val/map") == 0.25
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(ValueError, match="nan"):
        study.tell(trial, values=[value])
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


@pytest.mark.parametrize(
    ("launcher", "trainer", "keys"),
    [
        ({"_target_": "x.JoblibLauncher", "n_jobs": 2}, {"accelerator": "gpu", "devices": "auto"},
         ["hydra.launcher.n_jobs=2", "trainer.devices=auto"]),
        ({"_target_": "x.LocalLauncher", "tasks_per_node": 2}, {"accelerator": "cpu", "devices": 2},
         ["hydra.launcher.tasks_per_node=2"]),
        ({"_target_": "x.LocalLauncher", "tasks_per_node": 1, "gpus_per_node": None},
         {"accelerator": "gpu", "devices": 2}, ["hydra.launcher.gpus_per_node=0"]),
        ({"_target_": "x.SlurmLauncher", "tasks_per_node": 8, "gpus_per_node": 8, "nodes": 1},
         {"accelerator": "gpu", "devices": 4, "num_nodes": 1},
         ["hydra.launcher.tasks_per_node=8", "trainer.devices=4"]),
        ({"_target_": "x.SlurmLauncher", "tasks_per_node": 8, "gpus_per_node": 8, "nodes": 2},
         {"accelerator": "gpu", "devices": "auto", "num_nodes": 1},
         ["hydra.launcher.nodes=2", "trainer.num_nodes=1"]),
    ],
)  # fmt: skip
def test_launcher_settings_that_cannot_run_the_ranks_are_named(launcher, trainer, keys):
    problem = launcher_problem(OmegaConf.create(launcher), OmegaConf.create(trainer))
    assert problem is not None and "\n" not in problem
    for key in keys:
        assert key in problem


@pytest.mark.parametrize(
    ("launcher", "trainer"),
    [
        ({"_target_": "x.JoblibLauncher", "n_jobs": 2}, {"accelerator": "cpu", "devices": 2}),
        ({"_target_": "x.JoblibLauncher", "n_jobs": 1}, {"accelerator": "gpu", "devices": 8}),
        ({"_target_": "x.LocalLauncher", "tasks_per_node": 1, "gpus_per_node": 2},
         {"accelerator": "gpu", "devices": 2}),
        ({"_target_": "x.SlurmLauncher", "tasks_per_node": 8, "gpus_per_node": 8, "nodes": 2},
         {"accelerator": "gpu", "devices": "auto", "num_nodes": 2}),
        ({"_target_": "x.SlurmLauncher", "tasks_per_node": 2, "gpus_per_node": 0, "nodes": 1},
         {"accelerator": "cpu", "devices": 2, "num_nodes": 1}),
    ],
)  # fmt: skip
def test_launcher_settings_that_can_run_the_ranks_pass(launcher, trainer):
    assert launcher_problem(OmegaConf.create(launcher), OmegaConf.create(trainer)) is None


def test_joblib_with_multi_gpu_jobs_is_refused_before_any_job_runs(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "src.train",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer=ddp",
         "model.variant=fpn,c5", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: hydra/launcher=joblib")
    assert "hydra.launcher.n_jobs=2" in line and "trainer.devices=auto" in line
    assert not list(sweep.glob("*/results.json"))
