"""``python -m src.data.download``: full, resumed, refused and restarted downloads from a local
server that serves small stand-ins for COCO's zips (nothing leaves 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import simple_split, write_coco

from src.data import download
from src.data.archive import resolve_split
from src.data.download import COCO_FILES, DownloadError, RemoteFile, download_coco, main

REPO = Path(__file__).resolve().parents[1]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        data = srv.files.get(self.path)
        srv.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.range_support:
            start, status = int(match.group(1)), 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut_after.pop(self.path, None)
        if cut is not None:  # send `cut` bytes of the body, then drop the connection
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    """A local server: ``.files`` path -> bytes, ``.range_support``, ``.cut_after`` path -> n
    (the next response for that path stops after n bytes), ``.requests`` (path, Range) seen."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.range_support, srv.cut_after, srv.requests = {}, True, {}, []
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _zip_of(folder: Path, arc_prefix: str, names: list[Path] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(names or folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{arc_prefix}/{path.relative_to(folder).as_posix()}")
    return out.getvalue()


@pytest.fixture
def stand_ins(tmp_path, server, monkeypatch):
    """Small zips in COCO's layout, served at COCO's paths; COCO_FILES patched to their sizes
    and md5s. Returns name -> bytes."""
    src = tmp_path / "src"
    write_coco(src, "train2017", *simple_split(6))
    write_coco(src, "val2017", *simple_split(4, first_id=1000))
    blobs = {
        "train2017": _zip_of(src / "train2017", "train2017"),
        "val2017": _zip_of(src / "val2017", "val2017"),
        "annotations": _zip_of(src / "annotations", "annotations"),
    }
    table = {}
    for split, data in blobs.items():
        path = COCO_FILES[split].path
        server.files["/" + path] = data
        table[split] = RemoteFile(path, len(data), hashlib.md5(data).hexdigest())
    monkeypatch.setattr(download, "COCO_FILES", table)
    return blobs


def _get(server, to, splits=("val2017",), **kwargs):
    kwargs = {"progress": False, "log": lambda _: None, **kwargs}
    return download_coco(to, splits, base_url=server.url, **kwargs)


def test_full_download_gives_the_layout_the_datamodule_reads(tmp_path, server, stand_ins):
    to = tmp_path / "coco"
    paths = _get(server, to, ["train2017", "val2017", "annotations"])
    assert [p.name for p in paths] == [
        "train2017.zip", "val2017.zip", "annotations_trainval2017.zip"
    ]  # fmt: skip
    for split, data in stand_ins.items():
        assert (to / COCO_FILES[split].name).read_bytes() == data
    assert sorted(p.name for p in to.iterdir()) == sorted(p.name for p in paths)  # no .part
    for split in ("train2017", "val2017"):
        source = resolve_split(to, split)  # read in place, nothing extracted
        assert source.image_zip == to / f"{split}.zip" and source.image_dir is None
        assert source.annotation_member == f"annotations/instances_{split}.json"
        assert b'"images"' in source.read_annotations()
    # a second run finds the files in place and requests nothing
    before = len(server.requests)
    _get(server, to, ["train2017", "val2017", "annotations"], verify_existing=True)
    assert len(server.requests) == before


def test_interrupted_download_resumes_with_range(tmp_path, server, stand_ins):
    data = stand_ins["val2017"]
    path = "/" + COCO_FILES["val2017"].path
    cut = len(data) // 3
    server.cut_after[path] = cut
    to = tmp_path / "coco"
    with pytest.raises(DownloadError, match=r"val2017\.zip: download failed .*closed after"):
        _get(server, to, retries=0)
    part = to / "val2017.zip.part"
    assert part.read_bytes() == data[:cut]  # kept: a prefix
    assert not (to / "val2017.zip").exists()
    _get(server, to, retries=0)  # the next run resumes
    assert server.requests[-1] == (path, f"bytes={cut}-")
    assert (to / "val2017.zip").read_bytes() == data and not part.exists()


def test_dropped_connection_is_resumed_within_one_run(tmp_path, server, stand_ins):
    data = stand_ins["annotations"]
    path = "/" + COCO_FILES["annotations"].path
    server.cut_after[path] = 1000
    to = tmp_path / "coco"
    download.download_file(server.url + path, to / "a.zip", size=len(data),
                           md5=hashlib.md5(data).hexdigest(), progress=False, retry_wait=0)  # fmt: skip
    assert (to / "a.zip").read_bytes() == data
    assert [r for p, r in server.requests if p == path] == [None, "bytes=1000-"]


def test_corrupt_file_of_the_right_size_is_refused_and_deleted(tmp_path, server, stand_ins):
    data = bytearray(stand_ins["val2017"])
    data[len(data) // 2] ^= 0xFF
    server.files["/" + COCO_FILES["val2017"].path] = bytes(data)
    to = tmp_path / "coco"
    expected = download.COCO_FILES["val2017"].md5
    with pytest.raises(DownloadError, match=rf"val2017\.zip: md5 \w+ does not match .*{expected}"):
        _get(server, to)
    assert list(to.iterdir()) == []  # neither the file nor a .part that is not a prefix


def test_wrong_size_is_refused_naming_expected_and_got(tmp_path, server, stand_ins):
    server.files["/" + COCO_FILES["val2017"].path] = b"<html>not found</html>"
    expected = download.COCO_FILES["val2017"].size
    with pytest.raises(DownloadError, match=rf"val2017\.zip: .* 22 bytes, expected {expected}"):
        _get(server, tmp_path / "coco")
    assert not (tmp_path / "coco" / "val2017.zip").exists()


def test_server_without_range_support_restarts_cleanly(tmp_path, server, stand_ins):
    data = stand_ins["val2017"]
    to = tmp_path / "coco"
    to.mkdir()
    (to / "val2017.zip.part").write_bytes(b"X" * 100)  # a stale prefix that is not the file's
    server.range_support = False
    _get(server, to)
    assert server.requests[-1][1] == "bytes=100-"  # asked, ignored, whole file sent
    assert (to / "val2017.zip").read_bytes() == data
    assert not (to / "val2017.zip.part").exists()


def test_part_longer_than_the_file_is_dropped(tmp_path, server, stand_ins):
    data = stand_ins["val2017"]
    to = tmp_path / "coco"
    to.mkdir()
    (to / "val2017.zip.part").write_bytes(b"X" * (len(data) + 1))
    _get(server, to)
    assert (to / "val2017.zip").read_bytes() == data
    assert server.requests[-1][1] is None


def test_existing_file_of_the_wrong_size_is_refused(tmp_path, server, stand_ins):
    to = tmp_path / "coco"
    to.mkdir()
    (to / "val2017.zip").write_bytes(b"short")
    with pytest.raises(DownloadError, match=r"val2017\.zip: .*5 bytes, expected"):
        _get(server, to)


def test_cli_downloads_and_reports(tmp_path, server, stand_ins, monkeypatch, capsys):
    to = tmp_path / "coco"
    code = main(["coco", "--to", str(to), "--splits", "val2017", "annotations",
                 "--base-url", server.url, "--quiet"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "val2017.zip: downloaded, size and md5 verified" in out
    assert (to / "annotations_trainval2017.zip").read_bytes() == stand_ins["annotations"]
    server.files.clear()  # a failure: exit 1, one line naming the file
    (to / "val2017.zip").unlink()
    code = main(["coco", "--to", str(to), "--splits", "val2017", "--base-url", server.url,
                 "--quiet", "--retries", "0"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "val2017.zip" in err and "404" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["coco"], "--to"),
        (["imagenet", "--to", "x"], "invalid choice: 'imagenet'"),
        (["coco", "--to", "x", "--splits", "test2017"], "invalid choice: 'test2017'"),
        (["coco", "--to", "x", "--retries", "-1"], "--retries"),
        (["coco", "--to", "x", "--base-url", "ftp://example"], "--base-url"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "src.data.download", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
