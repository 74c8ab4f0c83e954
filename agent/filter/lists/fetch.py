"""Downloading a list over HTTPS (or HTTP to loopback, for tests) into a file, safely.

The only module that imports urllib. Every failure becomes a ListError naming the URL:
network errors, HTTP errors, redirects to a URL we would refuse, oversize bodies, and bodies
shorter than their Content-Length (truncated transfers).
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.filter.lists.model import ListError
from common.filter_rules import url_problem

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024 * 1024
TIMEOUT_S = 30.0
_BLOCK = 1 << 16


@dataclass(frozen=True, slots=True)
class Fetched:
    """The outcome of a conditional GET: `changed` is False on 304 Not Modified."""

    changed: bool
    etag: str | None = None
    last_modified: str | None = None
    size: int = 0


class _CheckedRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs that would be accepted as list sources themselves."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        problem = url_problem(newurl)
        if problem:
            raise ListError(f"list {req.full_url}: redirected to {newurl}, which {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(url: str) -> urllib.request.OpenerDirector:
    # Loopback test servers must not go through an environment proxy; real URLs may.
    proxies = urllib.request.ProxyHandler({} if url.startswith("http://") else None)
    return urllib.request.build_opener(proxies, _CheckedRedirect())


def fetch(
    url: str,
    dest: Path,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout: float = TIMEOUT_S,
) -> Fetched:
    """GET url into dest (conditional on etag/last_modified); raises ListError on any failure."""
    problem = url_problem(url)
    if problem:
        raise ListError(f"list {url}: {problem}")
    request = urllib.request.Request(url, headers={"User-Agent": "hedgerow-dns"})
    if etag:
        request.add_header("If-None-Match", etag)
    if last_modified:
        request.add_header("If-Modified-Since", last_modified)
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            size = _copy(response, dest, url)
            fetched = Fetched(
                True, response.headers.get("ETag"), response.headers.get("Last-Modified"), size
            )
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            return Fetched(False, etag, last_modified)
        raise ListError(f"list {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ListError(f"list {url}: cannot fetch: {exc.reason}") from exc
    except (http.client.HTTPException, OSError) as exc:
        raise ListError(f"list {url}: download failed: {exc!r}") from exc
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise ListError(f"list {url}: truncated: got {size} of {expected} bytes")
    log.debug("fetched %s: %s bytes", url, size)
    return fetched


def _copy(response: IO[bytes], dest: Path, url: str) -> int:
    size = 0
    with open(dest, "wb") as out:
        while True:
            block = response.read(_BLOCK)
            if not block:
                return size
            size += len(block)
            if size > MAX_BYTES:
                raise ListError(f"list {url}: larger than {MAX_BYTES} bytes; refusing it")
            out.write(block)
