"""AtomicCheckpointIO: a save replaces the checkpoint whole or not at all, even under kill -9."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch

from src.training.checkpoint_io import AtomicCheckpointIO, remove_stale_temp_files, temp_path_for

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    pid = process.pid
    assert not psutil.pid_exists(pid), "pid reused already: rerun"
    return pid


def test_save_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "run" / "last.ckpt"  # the folder is made on first save
    for counter in (1, 2):
        io.save_checkpoint({"counter": torch.tensor(counter), "w": torch.randn(64, 64)}, path)

    assert os.listdir(path.parent) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["counter"] == 2
    assert io.load_checkpoint(path)["counter"] == 2
    with pytest.raises(ValueError, match="weights_only=True"):
        io.load_checkpoint(path, weights_only=False)
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, path, storage_options={"a": 1})


def test_failed_save_keeps_the_previous_file_and_removes_its_temp_file(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"counter": torch.tensor(1), "w": torch.ones(1000)}, path)
    before = path.read_bytes()

    # torch.save has already written the start of the archive when the lambda fails
    with pytest.raises(Exception, match="lambda"):
        io.save_checkpoint({"w": torch.zeros(1000), "hook": lambda: None}, path)

    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]


# A save that the file system refuses midway (disk full, in CI) raised torch's bare
# "unexpected pos N vs M"; RLIMIT_FSIZE makes the kernel refuse writes past 1 MB, for real.
_WRITE_PAST_LIMIT = """
import resource, signal, sys, torch
from src.training.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
path = sys.argv[1]
io = AtomicCheckpointIO()
io.save_checkpoint({"counter": torch.tensor(1)}, path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
try:
    io.save_checkpoint({"counter": torch.tensor(2), "w": torch.zeros(2**20)}, path)  # 4 MB
except CheckpointWriteError as error:
    print(type(error).__name__, error.errno, error)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_the_file_system_refuses_is_named_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.run(
        [sys.executable, "-c", _WRITE_PAST_LIMIT, str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip()
    assert out.startswith("CheckpointWriteError 27 "), out  # errno EFBIG, kept
    assert f"could not write the checkpoint {str(path)!r}: File too large" in out
    assert "the write stopped after 1.0 MB" in out and "MB free on that filesystem" in out
    assert "the previous 'last.ckpt' is untouched and the partial file was removed" in out
    assert "unexpected pos" not in out
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["counter"] == 1


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = temp_path_for(tmp_path / "last.ckpt", pid=dead_pid())
    live = temp_path_for(tmp_path / "best.ckpt", pid=os.getpid())
    others = [tmp_path / name for name in ("notes.tmp-1", ".x.tmp-abc", "epoch=1.ckpt")]
    for file in [dead, live, *others]:
        file.write_bytes(b"partial")

    assert remove_stale_temp_files(tmp_path) == [dead]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [live, *others])
    assert remove_stale_temp_files(tmp_path / "missing") == []

    # a save cleans its folder first
    dead = temp_path_for(tmp_path / "epoch=1.ckpt", pid=dead_pid())
    dead.write_bytes(b"partial")
    AtomicCheckpointIO().save_checkpoint({"counter": torch.tensor(1)}, tmp_path / "last.ckpt")
    assert not dead.exists()
    assert live.exists()


# The kill test. Importing Lightning takes seconds, so one "zygote" process imports once and
# forks a fresh saver per try: the saver loops saving to TARGET, a different ~40 MB of tensors
# each round, and prints a line after each save returns; the test kills it with SIGKILL.
ZYGOTE = """
import importlib, os, sys
import torch

module, name = sys.argv[1].split(":")
checkpoint_io = getattr(importlib.import_module(module), name)()
target = sys.argv[2]


def save_forever(counter):
    zygote = os.getppid()
    torch.set_num_threads(1)
    weights = {f"w{k}": torch.empty(1 << 20) for k in range(10)}  # 10 x 4 MB
    while os.getppid() == zygote:  # the zygote died (the test was killed): stop
        for tensor in weights.values():
            tensor.fill_(counter)
        checkpoint_io.save_checkpoint(
            {"counter": torch.tensor(counter), "state_dict": weights}, target
        )
        os.write(1, f"{os.getpid()} saved {counter}\\n".encode())
        counter += 1


print("ready", flush=True)
while line := sys.stdin.readline():
    command, arg = line.split()
    if command == "spawn":
        pid = os.fork()
        if pid == 0:
            try:
                save_forever(int(arg))
            finally:
                os._exit(1)
        print(f"spawned {pid}", flush=True)
    elif command == "reap":
        # once the killed saver is reaped, all its lines are in the pipe before ours
        os.waitpid(int(arg), 0)
        print(f"reaped {arg}", flush=True)
"""


@dataclass
class KillOutcome:
    """What the run folder and $TMPDIR held right after one saver was killed."""

    pid: int  # the saver's
    saved: list[int]  # counters the saver reported as saved, in order
    loaded: int | None  # counter of the checkpoint on disk; None: it did not load
    error: str  # why it did not load
    run_files: list[str]
    tmpdir_files: list[str]


def kill_savers(
    checkpoint_io: str,
    run_dir: Path,
    tmpdir: Path,
    tries: int,
    max_delay_s: float,
    time_budget_s: float,
    seed: int = 0,
) -> list[KillOutcome]:
    """Starts a saver ``tries`` times and SIGKILLs it at a random moment after its first save.

    Args:
        checkpoint_io: ``module:Class`` of the CheckpointIO the saver uses.
        run_dir: where the saver writes ``last.ckpt``.
        tmpdir: the child's ``$TMPDIR``.
        tries: how many savers to kill.
        max_delay_s: the kill comes uniformly within this long after the first save.
        time_budget_s: no new try starts after this long (the zygote's start included).
        seed: of the delays.

    Returns:
        One outcome per try.
    """
    deadline = time.monotonic() + time_budget_s
    rng = random.Random(seed)
    target = run_dir / "last.ckpt"
    script = run_dir.parent / "zygote.py"
    script.write_text(ZYGOTE)
    stderr = (run_dir.parent / "zygote.err").open("wb")
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    zygote = subprocess.Popen(
        [sys.executable, str(script), checkpoint_io, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        text=True,
        bufsize=1,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in zygote.stdout], daemon=True
    ).start()

    def next_line(timeout: float = 60) -> str:
        try:
            return lines.get(timeout=timeout).strip()
        except queue.Empty:
            zygote.kill()
            raise AssertionError(
                f"no line from the saver in {timeout} s; its stderr:\n"
                + (run_dir.parent / "zygote.err").read_text()
            ) from None

    def send(command: str) -> None:
        zygote.stdin.write(command + "\n")
        zygote.stdin.flush()

    outcomes: list[KillOutcome] = []
    saver = None
    try:
        assert next_line() == "ready"
        for attempt in range(tries):
            if time.monotonic() > deadline:
                break
            # counters unique across savers, so a file left by an earlier one cannot pass
            send(f"spawn {attempt * 100_000}")
            saver = int(next_line().removeprefix("spawned "))
            saved = [int(next_line().removeprefix(f"{saver} saved "))]
            time.sleep(rng.uniform(0, max_delay_s))
            os.kill(saver, signal.SIGKILL)
            send(f"reap {saver}")
            while (line := next_line()) != f"reaped {saver}":
                saved.append(int(line.removeprefix(f"{saver} saved ")))
            try:
                checkpoint = torch.load(target, weights_only=True)
                loaded, error = int(checkpoint["counter"]), ""
                weights = checkpoint["state_dict"].values()
                if not all(bool((w == loaded).all()) for w in weights):
                    loaded, error = None, "tensors do not match the counter"
            except Exception as exc:  # a truncated file: the failure this test is for
                loaded, error = None, f"{type(exc).__name__}: {exc}"
            outcomes.append(
                KillOutcome(
                    saver,
                    saved,
                    loaded,
                    error,
                    sorted(os.listdir(run_dir)),
                    sorted(os.listdir(tmpdir)),
                )
            )
            saver = None
    finally:
        if saver is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(saver, signal.SIGKILL)
        zygote.kill()
        zygote.wait()
        stderr.close()
    return outcomes


@pytest.fixture
def foreign_tmpdir(tmp_path):
    """A $TMPDIR on another filesystem than ``tmp_path`` (/dev/shm) where the machine has one,
    as when last.ckpt was found truncated; else a folder beside the run folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = Path(tempfile.mkdtemp(prefix="checkpoint-io-test-", dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        folder = tmp_path / "tmpdir"
        folder.mkdir()
        yield folder


def test_killed_saves_leave_a_complete_checkpoint(tmp_path, foreign_tmpdir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    outcomes = kill_savers(
        "src.training.checkpoint_io:AtomicCheckpointIO",
        run_dir,
        foreign_tmpdir,
        tries=25,
        max_delay_s=0.4,
        time_budget_s=40,
    )

    assert len(outcomes) >= 10, f"only {len(outcomes)} tries in the time budget"
    for i, outcome in enumerate(outcomes):
        last = outcome.saved[-1]
        # the saver may die between os.replace and its print: then the file is one ahead
        assert outcome.loaded in (last, last + 1), f"try {i}: {outcome}"
        assert outcome.tmpdir_files == [], f"try {i}: {outcome}"
        # at most the temp file of the saver just killed; earlier ones were cleaned up
        allowed = {"last.ckpt", temp_path_for(run_dir / "last.ckpt", pid=outcome.pid).name}
        assert set(outcome.run_files) <= allowed, f"try {i}: {outcome}"
