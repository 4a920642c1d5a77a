"""benchmarks/rerun_bits.py: equal logged values read as bit-identical, a changed last digit does not,
and a folder without metrics is refused by name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rerun_bits.py"


def _load():
    spec = importlib.util.spec_from_file_location("rerun_bits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(root: Path, name: str, losses: dict[int, str], ar: str = "0.0") -> Path:
    run = root / name
    (run / "csv").mkdir(parents=True)
    lines = ["epoch,step,train/loss,val/ar_100"]
    lines += [f"0,{step},{loss}," for step, loss in losses.items()]
    lines.append(f"0,19,,{ar}")  # a validation row: no loss, an AR
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_identical_and_differing_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rerun_bits = _load()
    a = _run_dir(tmp_path, "a", {9: "0.6106507778167725", 19: "0.238416850566864"})
    b = _run_dir(tmp_path, "b", {9: "0.6106507778167725", 19: "0.238416850566864"})
    c = _run_dir(tmp_path, "c", {9: "0.6106507778167725", 19: "0.23841685056686404"}, ar="0.1")
    rerun_bits.main([str(a), str(b), str(c)])
    out = capsys.readouterr().out
    assert "| step 9 | step 19 |" in out
    assert f"{b}: bit-identical to {a} at all 2 steps" in out
    assert f"{c}: first differs at step 19" in out

    rerun_bits.main([str(a), str(c), "--key", "val/ar_100"])  # a's AR is 0: no division by it
    assert (
        f"{c}: first differs at step 19; largest relative difference 1.0e+11"
        in capsys.readouterr().out
    )


def test_refuses_a_folder_without_metrics(tmp_path: Path) -> None:
    rerun_bits = _load()
    with pytest.raises(SystemExit, match=r"metrics\.csv: not found"):
        rerun_bits.main([str(tmp_path)])
    a = _run_dir(tmp_path, "a", {9: "0.5"})
    with pytest.raises(SystemExit, match="no column 'train/los'"):
        rerun_bits.main([str(a), "--key", "train/los"])
