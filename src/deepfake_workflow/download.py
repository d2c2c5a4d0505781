"""Download one file over HTTP(S), resumably, and accept it only if its SHA-256 matches.

The bytes go to `<dest>.part` first; only a file whose checksum has been verified is
renamed to `dest`, so a file under the final name is always a complete, checked download.
Standard library (urllib) only, plus tqdm for the progress bar.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import ConfigError, DownloadError

logger = logging.getLogger(__name__)

_USER_AGENT = "deepfake-workflow-download/1"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
# Server-side hiccups worth another try; any other HTTP error (404, 403, ...) is final.
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect to ftp://; stay on http(s)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(("http://", "https://")):
            raise DownloadError(f"{req.full_url} redirects to {newurl!r}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


class _Retryable(Exception):
    """A failure that another attempt, resuming from the .part file, may get past."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the SHA-256 of a file as lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str,
    timeout: float = 60.0,
    retries: int = 3,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    retry_wait: float = 1.0,
) -> Path:
    """Download `url` to `dest` and verify it against `sha256`; return `dest`.

    - Only http:// and https:// URLs are accepted.
    - If `dest` already exists with the right checksum nothing is fetched; with a wrong
      checksum it is downloaded again (and replaced only once the new copy verifies).
    - Bytes are written to `<dest>.part`. An existing .part is resumed with an HTTP Range
      request; a server that ignores the range (answers 200) makes it start from zero.
    - A dropped connection, short read or socket timeout (`timeout` seconds without data)
      is retried up to `retries` times, resuming where it stopped, waiting
      `retry_wait * 2**n` seconds between tries. 404 and other client errors are not retried.
    - On a checksum mismatch the .part file is deleted and DownloadError names the URL and
      both digests.
    """
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"refusing to download {url!r}: only http:// and https:// URLs are supported")
    expected = sha256.strip().lower()
    if not _SHA256_HEX.fullmatch(expected):
        raise ConfigError(f"sha256 for {url} must be 64 hex digits, got {sha256!r}")
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")

    dest = Path(dest)
    if dest.is_file():
        actual = sha256_file(dest)
        if actual == expected:
            logger.info("%s already present, sha256 verified; not downloading again", dest)
            return dest
        logger.warning("%s exists but its sha256 is %s, expected %s; downloading again", dest, actual, expected)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout=timeout, chunk_size=chunk_size, progress=progress, label=dest.name)
            break
        except _Retryable as exc:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                hint = f"; {kept} bytes kept in {part}, resumed next time" if kept else ""
                raise DownloadError(f"download of {url} failed after {attempt + 1} attempt(s): {exc}{hint}") from exc
            wait = retry_wait * 2**attempt
            logger.warning("download of %s interrupted (%s); resuming in %.1f s", url, exc, wait)
            time.sleep(wait)

    actual = sha256_file(part)
    if actual != expected:
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; "
            f"the downloaded file was deleted"
        )
    os.replace(part, dest)
    logger.info("downloaded %s to %s, sha256 verified", url, dest)
    return dest


def _fetch_into(url: str, part: Path, *, timeout: float, chunk_size: int, progress: bool, label: str) -> None:
    """One attempt: append the rest of `url` to `part` (or rewrite it if the server
    does not honour the range). Raises _Retryable for transient failures."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Nothing left past our offset: the .part is (probably) complete already,
            # e.g. a previous run died before verifying. The checksum decides.
            return
        message = f"HTTP {exc.code} {exc.reason} for {url}"
        if exc.code in _RETRYABLE_STATUS:
            raise _Retryable(message) from exc
        raise DownloadError(f"download failed: {message}") from exc
    except urllib.error.URLError as exc:
        raise _Retryable(_describe(exc.reason, timeout)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(_describe(exc, timeout)) from exc

    with response:
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                # Cannot splice this in; throw the partial file away and start over.
                part.unlink(missing_ok=True)
                raise _Retryable(f"server sent a range starting at {start}, asked for {offset}")
            mode = "ab"
        elif response.status == 200:
            if offset:
                logger.info("server ignored the Range request for %s; restarting from zero", url)
            offset, mode = 0, "wb"
            total = _int_or_none(response.headers.get("Content-Length"))
        else:
            raise DownloadError(f"download failed: unexpected HTTP {response.status} for {url}")

        body_length = _int_or_none(response.headers.get("Content-Length"))
        received = 0
        with open(part, mode) as fh, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=label, disable=not progress, leave=False,
        ) as bar:
            try:
                while chunk := response.read(chunk_size):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _Retryable(_describe(exc, timeout)) from exc
    # http.client returns b"" (no error) when the peer closes early, so count ourselves.
    if body_length is not None and received < body_length:
        raise _Retryable(f"connection closed after {received} of {body_length} bytes")


def _describe(exc: object, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out (no data for {timeout:g} s)"
    return f"{type(exc).__name__}: {exc}"


def _parse_content_range(value: str | None) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        raise _Retryable(f"206 response with unreadable Content-Range {value!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
