"""download(): real HTTP against a loopback server that misbehaves on purpose."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time

import pytest
from http_server import LoopbackServer, Route

from deepfake_workflow.archives import safe_extract
from deepfake_workflow.download import download, sha256_file
from deepfake_workflow.errors import ConfigError, DownloadError

BODY = os.urandom(300_000)
BODY_SHA = hashlib.sha256(BODY).hexdigest()
FAST = dict(progress=False, retry_wait=0.0, chunk_size=16 * 1024)


def _part(dest):
    return dest.with_name(dest.name + ".part")


def _ffdi_tar_gz() -> tuple[bytes, dict[str, bytes]]:
    """A tiny archive in the Multi-FFDI layout: phase1/<split>/<md5>.jpg plus label files."""
    files: dict[str, bytes] = {}
    labels = ["img_name,target"]
    for i in range(4):
        content = f"fake jpeg {i}".encode() + os.urandom(64)
        name = hashlib.md5(content).hexdigest() + ".jpg"
        files[f"phase1/trainset/{name}"] = content
        labels.append(f"{name},{i % 2}")
    files["phase1/trainset_label.txt"] = ("\n".join(labels) + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue(), files


def test_good_archive_downloads_verifies_and_extracts(tmp_path):
    archive, files = _ffdi_tar_gz()
    with LoopbackServer({"/ffdi.tar.gz": archive}) as server:
        dest = download(server.url("/ffdi.tar.gz"), tmp_path / "dl" / "ffdi.tar.gz",
                        sha256=hashlib.sha256(archive).hexdigest(), **FAST)
    assert dest == tmp_path / "dl" / "ffdi.tar.gz"
    assert dest.read_bytes() == archive
    assert not _part(dest).exists()
    names = safe_extract(dest, tmp_path / "raw")
    assert set(files) <= set(names)
    for name, content in files.items():
        assert (tmp_path / "raw" / name).read_bytes() == content


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(BODY)
    assert sha256_file(path) == BODY_SHA


def test_bad_checksum_leaves_neither_dest_nor_part(tmp_path):
    dest = tmp_path / "f.bin"
    wrong = "0" * 64
    with LoopbackServer({"/f.bin": BODY}) as server:
        with pytest.raises(DownloadError) as err:
            download(server.url("/f.bin"), dest, sha256=wrong, **FAST)
    message = str(err.value)
    assert server.url("/f.bin") in message and wrong in message and BODY_SHA in message
    assert not dest.exists() and not _part(dest).exists()


def test_uppercase_checksum_is_accepted(tmp_path):
    with LoopbackServer({"/f.bin": BODY}) as server:
        dest = download(server.url("/f.bin"), tmp_path / "f.bin", sha256=BODY_SHA.upper(), **FAST)
    assert dest.read_bytes() == BODY


def test_malformed_checksum_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="64 hex"):
        download("http://127.0.0.1:9/f.bin", tmp_path / "f.bin", sha256="abc", **FAST)


def test_dropped_connection_is_resumed_with_range(tmp_path):
    dest = tmp_path / "f.bin"
    with LoopbackServer({"/f.bin": Route(BODY, drop_after=100_000)}) as server:
        download(server.url("/f.bin"), dest, sha256=BODY_SHA, **FAST)
    assert server.range_headers("/f.bin") == [None, "bytes=100000-"]
    assert dest.read_bytes() == BODY
    assert not _part(dest).exists()


def test_existing_part_file_is_resumed(tmp_path):
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(BODY[:123_456])
    with LoopbackServer({"/f.bin": BODY}) as server:
        download(server.url("/f.bin"), dest, sha256=BODY_SHA, **FAST)
    assert server.range_headers("/f.bin") == ["bytes=123456-"]
    assert dest.read_bytes() == BODY


def test_complete_part_file_gets_416_and_is_verified(tmp_path):
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(BODY)
    with LoopbackServer({"/f.bin": BODY}) as server:
        download(server.url("/f.bin"), dest, sha256=BODY_SHA, **FAST)
    assert server.range_headers("/f.bin") == [f"bytes={len(BODY)}-"]
    assert dest.read_bytes() == BODY


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(b"garbage that must not stay at the front")
    with LoopbackServer({"/f.bin": Route(BODY, ignore_range=True)}) as server:
        download(server.url("/f.bin"), dest, sha256=BODY_SHA, **FAST)
    assert server.range_headers("/f.bin") == ["bytes=39-"]
    assert dest.read_bytes() == BODY


def test_404_is_a_clear_error_and_not_retried(tmp_path):
    dest = tmp_path / "missing.bin"
    with LoopbackServer({}) as server:
        with pytest.raises(DownloadError, match="HTTP 404") as err:
            download(server.url("/missing.bin"), dest, sha256=BODY_SHA, retries=3, **FAST)
        assert server.count("/missing.bin") == 1
    assert server.url("/missing.bin") in str(err.value)
    assert not dest.exists()


def test_503_is_retried_then_reported(tmp_path):
    with LoopbackServer({"/busy": Route(status=503)}) as server:
        with pytest.raises(DownloadError, match="HTTP 503.*after|after 3 attempt.*HTTP 503"):
            download(server.url("/busy"), tmp_path / "busy", sha256=BODY_SHA, retries=2, **FAST)
        assert server.count("/busy") == 3


def test_stalled_server_times_out_quickly(tmp_path):
    dest = tmp_path / "slow.bin"
    with LoopbackServer({"/slow.bin": Route(BODY, stall=True)}, stall_seconds=5.0) as server:
        started = time.monotonic()
        with pytest.raises(DownloadError, match="timed out"):
            download(server.url("/slow.bin"), dest, sha256=BODY_SHA, timeout=0.5, retries=1, **FAST)
        elapsed = time.monotonic() - started
        assert server.count("/slow.bin") == 2
    assert elapsed < 3.0
    assert not dest.exists()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/data.tar.gz", "data.tar.gz"])
def test_non_http_urls_are_refused(tmp_path, url):
    with pytest.raises(DownloadError, match="only http"):
        download(url, tmp_path / "x", sha256=BODY_SHA, **FAST)
    assert not (tmp_path / "x").exists()


def test_redirects_are_followed_only_to_http(tmp_path):
    routes = {"/f.bin": BODY, "/moved": Route(status=302, location="/f.bin"),
              "/to-ftp": Route(status=302, location="ftp://127.0.0.1/f.bin")}
    with LoopbackServer(routes) as server:
        download(server.url("/moved"), tmp_path / "f.bin", sha256=BODY_SHA, **FAST)
        with pytest.raises(DownloadError, match="not http"):
            download(server.url("/to-ftp"), tmp_path / "g.bin", sha256=BODY_SHA, **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert not (tmp_path / "g.bin").exists()


def test_verified_existing_file_is_not_fetched_again(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(BODY)
    with LoopbackServer({"/f.bin": BODY}) as server:
        assert download(server.url("/f.bin"), dest, sha256=BODY_SHA, **FAST) == dest
    assert server.count("/f.bin") == 0


def test_existing_file_with_wrong_content_is_downloaded_again(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    with LoopbackServer({"/f.bin": BODY}) as server:
        download(server.url("/f.bin"), dest, sha256=BODY_SHA, **FAST)
    assert server.count("/f.bin") == 1
    assert dest.read_bytes() == BODY
