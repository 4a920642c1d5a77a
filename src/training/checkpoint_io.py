"""Checkpoint writes that a crash cannot leave half done.

Lightning's ``TorchCheckpointIO`` goes through an fsspec transaction that first writes to a
file in ``$TMPDIR``; when that folder is on another filesystem than the run folder, the commit
is a copy into the destination, so a ``kill -9`` during it left a truncated ``last.ckpt``
(4 MB of 124 MB) in place of the previous good one. Here the bytes go to a temporary file
beside the destination, reach the disk, and only then take its name with ``os.replace``,
which is atomic within one filesystem: the path always holds a complete checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

# ".last.ckpt.tmp-12345": hidden, and not ending in ".ckpt", so that no checkpoint scan
# (ModelCheckpoint's, ours) takes a half-written file for a checkpoint
_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")


def temp_path_for(path: str | Path, pid: int | None = None) -> Path:
    """Where a save to ``path`` writes first: ``<dir>/.<name>.tmp-<pid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Deletes the temporary files that saves killed midway left in ``directory``.

    Only files named ``.<name>.tmp-<pid>`` whose process no longer exists are removed: a live
    pid may be another process saving into the same folder right now.

    Args:
        directory: the checkpoint folder; a missing folder holds nothing to remove.

    Returns:
        The files removed.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if psutil.pid_exists(int(match.group(1))):
            continue
        # another cleaner (a second run starting in the same folder) may have been first
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _fsync_directory(directory: str | Path) -> None:
    """Makes a rename in ``directory`` durable (a no-op where folders cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows: NTFS journals the rename itself
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, quota, file size limit, I/O error).

    torch reports a failed write as ``RuntimeError: [enforce fail at inline_container.cc]
    unexpected pos N vs M``, which names neither the file nor the cause; this names both, the
    free space left, and what became of the previous checkpoint at that path.
    """

    def __init__(self, path: Path, cause: OSError, written: int) -> None:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MB free"
        except OSError:
            free = "free space unknown"
        previous = (
            f"the previous {path.name!r} is untouched"
            if path.is_file()
            else f"no earlier {path.name!r} existed"
        )
        super().__init__(
            cause.errno,
            f"could not write the checkpoint {str(path)!r}: {cause.strerror or cause} (the write "
            f"stopped after {written / 2**20:.1f} MB; {free} on that filesystem); {previous} and "
            "the partial file was removed",
        )
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: itself, or the one torch's writer was handling when it
    raised its own RuntimeError (``__context__``)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` for local paths whose saves are all-or-nothing.

    ``save_checkpoint(checkpoint, path)`` writes ``<dir>/.<name>.tmp-<pid>`` beside ``path``,
    fsyncs it, renames it over ``path`` and fsyncs the folder; after a crash at any point,
    ``path`` holds either the previous checkpoint or the new one, and nothing is written to
    ``$TMPDIR``. Temp files of dead processes are removed before each save.
    ``load_checkpoint`` reads tensors and plain values only (``weights_only=True``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Saves ``checkpoint`` to ``path`` with ``torch.save``, replacing any previous file.

        Args:
            checkpoint: the model and trainer state, as ``Trainer.save_checkpoint`` builds it.
            path: the local file to write; its folder is created when missing.
            storage_options: not supported (as in ``TorchCheckpointIO``).

        Raises:
            TypeError: ``storage_options`` was given.
            CheckpointWriteError: the file system refused the write (disk full, quota, size
                limit); the previous file at ``path`` is left as it was.
        """
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported by "
                f"`{type(self).__name__}`"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # one scandir of a folder of a few files: nothing beside writing the checkpoint
        remove_stale_temp_files(path.parent)
        temp = temp_path_for(path)
        try:
            with open(temp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                # the data must be on disk before the rename, or a power cut could leave the
                # new name pointing at an empty file
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException as error:
            written = temp.stat().st_size if temp.is_file() else 0
            # KeyboardInterrupt too: a stale file of a live pid would stay until we exit
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            cause = _os_error_in(error)
            if cause is None:
                raise
            raise CheckpointWriteError(path, cause, written) from error
        _fsync_directory(path.parent)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Loads the checkpoint at ``path`` as data: tensors and plain values only.

        Args:
            path: the local checkpoint file.
            map_location: where tensors go, as for ``torch.load`` (default: where saved).
            weights_only: ``None`` or ``True``; ``False`` is refused, since unpickling
                arbitrary objects can run code.

        Returns:
            The loaded checkpoint.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: ``weights_only=False`` was asked for.
        """
        if weights_only is False:
            raise ValueError(
                f"{type(self).__name__} loads checkpoints with weights_only=True only "
                "(tensors and plain values); weights_only=False was asked for"
            )
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return torch.load(path, map_location=map_location, weights_only=True)
