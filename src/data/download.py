"""Fetch COCO 2017's official zips into the archive layout that the datamodule reads in place.

``python -m src.data.download coco --to DIR [--splits train2017 val2017 annotations]`` puts::

    DIR/train2017.zip                    (18 GiB, members train2017/*.jpg)
    DIR/val2017.zip                      (778 MiB, members val2017/*.jpg)
    DIR/annotations_trainval2017.zip     (241 MiB, members annotations/instances_*.json)

Nothing is extracted: :mod:`src.data.archive` reads the zips as they are (``data.root=DIR``).

Each file is written to ``NAME.part`` and renamed to ``NAME`` only after its size and md5
match :data:`COCO_FILES`, so a file under its final name is complete. An interrupted download
resumes from the ``.part`` file's size with an HTTP Range request (retried automatically, and
again on the next run); a server that ignores Range sends the whole file, which then replaces
the ``.part`` from byte 0. A ``.part`` that cannot be a prefix of the file (longer than it, or
complete with a wrong md5) is deleted. Standard library only (urllib).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

COCO_BASE_URL = "http://images.cocodataset.org"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its path under the base URL, its size in bytes and md5 (None: unknown).

    The file is saved under the path's last component (``zips/val2017.zip`` -> ``val2017.zip``).
    """

    path: str
    size: int | None
    md5: str | None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


# The official COCO 2017 zips. Sizes are the servers' Content-Length; the md5s are the ones
# published with COCO download scripts (PaddleDetection, NVIDIA DeepLearningExamples,
# intel/neural-compressor, ...), which all agree.
COCO_FILES: dict[str, RemoteFile] = {
    "train2017": RemoteFile(
        "zips/train2017.zip", 19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2"
    ),
    "val2017": RemoteFile("zips/val2017.zip", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
    "annotations": RemoteFile(
        "annotations/annotations_trainval2017.zip", 252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c"
    ),
}
SPLITS = tuple(COCO_FILES)
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download that failed or was refused; the message names the file and what went wrong."""


class _Interrupted(Exception):
    """The connection ended early; the ``.part`` file is a valid prefix to resume from."""


def _md5_of(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            md5.update(block)
    return md5.hexdigest()


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


class _Progress:
    """One line on stderr every few seconds: bytes so far, percent, speed."""

    def __init__(self, name: str, total: int | None, enabled: bool, every: float = 5.0) -> None:
        self.name, self.total, self.enabled, self.every = name, total, enabled, every
        self.start = self.last = time.monotonic()
        self.first = None

    def __call__(self, done: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.first is None:
            self.first = done
        if not final and now - self.last < self.every:
            return
        self.last = now
        speed = (done - self.first) / max(now - self.start, 1e-9)
        pct = f" {100 * done / self.total:5.1f}%" if self.total else ""
        print(
            f"{self.name}: {_human(done)}{pct} at {_human(int(speed))}/s",
            file=sys.stderr,
            flush=True,
        )


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "fpn-experiments-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _expect_size(dest: Path, expected: int | None, got: int, what: str) -> None:
    if expected is not None and got != expected:
        raise DownloadError(
            f"{dest.name}: {what} is {got} bytes, expected {expected} bytes; refusing it "
            "(a wrong URL, a proxy's error page, or a changed file)"
        )


def _fetch_once(
    url: str, dest: Path, part: Path, size: int | None, timeout: float, progress: _Progress
) -> int:
    """One request; appends to ``part`` (or rewrites it). Returns the expected total size.

    Raises _Interrupted when the connection ends before the end of the file.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:  # the .part is not a prefix the server can continue
            part.unlink()
            return _fetch_once(url, dest, part, size, timeout, progress)
        raise DownloadError(f"{dest.name}: {url} answered HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:  # URLError, refused, reset, timeout
        reason = getattr(err, "reason", err)
        raise _Interrupted(f"cannot reach {url}: {reason}") from err
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
            start = int(match.group(1)) if match else -1
            if start != offset:
                if not offset:
                    raise DownloadError(f"{dest.name}: {url} sent a part of the file unasked")
                response.close()  # not the range asked for: start again cleanly
                part.unlink()
                return _fetch_once(url, dest, part, size, timeout, progress)
            if match.group(3) != "*":
                _expect_size(dest, size, int(match.group(3)), "the server's file")
                total = int(match.group(3))
            else:
                total = size
            if length is not None:
                _expect_size(dest, None if total is None else total - offset, length, "the rest")
            mode = "ab"
        elif response.status == 200:  # whole file: the server ignored Range, or none was sent
            if length is not None:
                _expect_size(dest, size, length, "the server's file (Content-Length)")
            total = length if size is None else size
            offset, mode = 0, "wb"
        else:
            raise DownloadError(f"{dest.name}: {url} answered HTTP {response.status}")
        _check_free_space(dest, None if total is None else total - offset)
        done = offset
        with open(part, mode) as f:
            try:
                while block := response.read(CHUNK):
                    f.write(block)
                    done += len(block)
                    progress(done)
                    if total is not None and done > total:
                        break
            except (OSError, ValueError, http.client.HTTPException) as err:  # reset, timeout
                f.flush()
                raise _Interrupted(f"connection lost after {done} bytes: {err}") from err
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes")
    return total if total is not None else done


def _check_free_space(dest: Path, needed: int | None) -> None:
    if needed is None:
        return
    free = shutil.disk_usage(dest.parent).free
    if free < needed:
        raise DownloadError(
            f"{dest.name}: needs {_human(needed)} more in {dest.parent}, only {_human(free)} free"
        )


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    md5: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
    retry_wait: float = 2.0,
    verify_existing: bool = False,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming, verifying, renaming at the end.

    Args:
        size, md5: what the file must be (None: not checked); checked before the rename.
        retries: reconnections (each resuming with Range) after the connection drops.
        timeout: seconds without data before a connection counts as dropped.
        verify_existing: check the md5 of a ``dest`` that is already there too (else: its size;
            files this function renamed into place were verified before the rename).

    Returns:
        ``dest``.

    Raises:
        DownloadError: names the file and what was expected and got; the ``.part`` file stays
            only where it can be a prefix of the file (to resume from on the next run).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        _expect_size(dest, size, dest.stat().st_size, f"the existing {dest}")
        if verify_existing and md5 is not None and (digest := _md5_of(dest)) != md5.lower():
            raise DownloadError(
                f"{dest.name}: the existing {dest} has md5 {digest}, expected {md5.lower()}; "
                "delete it to download it again"
            )
        return dest
    if part.exists() and size is not None and part.stat().st_size > size:
        part.unlink()  # longer than the file: cannot be a prefix
    show = _Progress(dest.name, size, progress)
    attempt = 0
    while True:
        if part.exists() and size is not None and part.stat().st_size == size:
            break  # complete from an earlier run: only the checks remain
        try:
            _fetch_once(url, dest, part, size, timeout, show)
            break
        except _Interrupted as why:
            if attempt >= retries:
                kept = part.stat().st_size if part.exists() else 0
                where = (
                    f"{kept} bytes kept in {part}, run the command again to resume"
                    if kept
                    else "nothing downloaded"
                )
                raise DownloadError(
                    f"{dest.name}: download failed after {retries} retries ({why}); {where}"
                ) from None
            attempt += 1
            print(
                f"{dest.name}: {why}; resuming (retry {attempt}/{retries})",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(retry_wait * attempt)
    got = part.stat().st_size
    show(got, final=True)
    if size is not None and got != size:
        if got > size:
            part.unlink()
        raise DownloadError(f"{dest.name}: got {got} bytes, expected {size} bytes")
    if md5 is not None:
        if progress and got > 1 << 30:
            print(f"{dest.name}: checking md5 of {_human(got)} ...", file=sys.stderr, flush=True)
        digest = _md5_of(part)
        if digest != md5.lower():
            part.unlink()  # full length but wrong bytes: no prefix of it can be trusted
            raise DownloadError(
                f"{dest.name}: md5 {digest} does not match the expected {md5.lower()} "
                f"({got} bytes, the right size); the corrupt download was deleted, run again"
            )
    os.replace(part, dest)
    return dest


def download_coco(
    to: str | os.PathLike,
    splits: Sequence[str] = SPLITS,
    *,
    base_url: str = COCO_BASE_URL,
    retries: int = 5,
    progress: bool = True,
    verify_existing: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Fetch the COCO 2017 zips of ``splits`` (keys of COCO_FILES) into ``to``; see the module."""
    bad = [s for s in splits if s not in COCO_FILES]
    if bad:
        raise ValueError(f"splits {bad} are not allowed: choose from {', '.join(COCO_FILES)}")
    to = Path(to)
    out = []
    for split in dict.fromkeys(splits):
        remote = COCO_FILES[split]
        dest = to / remote.name
        existed = dest.exists()
        url = f"{base_url.rstrip('/')}/{remote.path}"
        download_file(url, dest, size=remote.size, md5=remote.md5, retries=retries,
                      progress=progress, verify_existing=verify_existing)  # fmt: skip
        checks = [c for c, v in (("size", remote.size), ("md5", remote.md5)) if v is not None]
        if existed and not verify_existing:
            checks = [c for c in checks if c != "md5"]
        state = "already there" if existed else "downloaded"
        log(f"{dest}: {state}, {' and '.join(checks) or 'nothing'} verified")
        out.append(dest)
    return out


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as argparse's own errors
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m src.data.download", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=["coco"], help="what to fetch (COCO 2017)")
    parser.add_argument("--to", required=True, help="folder for the zips (use it as data.root)")
    parser.add_argument(
        "--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="default: all three"
    )
    parser.add_argument("--base-url", default=COCO_BASE_URL, help="a mirror with the same paths")
    parser.add_argument("--retries", type=int, default=5, help="reconnections per file")
    parser.add_argument(
        "--verify-existing", action="store_true", help="md5-check zips already in --to too"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.retries < 0:
        parser.error(f"argument --retries: {args.retries} is not allowed: use 0 or more")
    if not re.match(r"^https?://", args.base_url):
        parser.error(f"argument --base-url: {args.base_url!r} is not an http(s) URL")
    if Path(args.to).exists() and not Path(args.to).is_dir():
        parser.error(f"argument --to: {args.to!r} exists and is not a folder")
    try:
        download_coco(
            args.to, args.splits, base_url=args.base_url, retries=args.retries,
            progress=not args.quiet, verify_existing=args.verify_existing,
        )  # fmt: skip
    except DownloadError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; run again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
