#!/usr/bin/env python3
"""Refresh agent/filter/data/google_domains.txt from Google's list of search domains.

    .venv/bin/python scripts/refresh_google_domains.py [--url URL] [--output FILE]

Downloads https://www.google.com/supported_domains (one `.google.<tld>` a line), refuses
anything that does not look like that list, and rewrites the file with a header saying where
it came from and when. Then run tests/test_dns_safesearch_domains.py and commit the file.
Not run by the tests: it needs the internet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

URL = "https://www.google.com/supported_domains"
OUTPUT = Path(__file__).resolve().parent.parent / "agent" / "filter" / "data" / "google_domains.txt"
LINE = re.compile(r"\.google\.[a-z]{2,3}(?:\.[a-z]{2})?")
MIN_DOMAINS = 150  # Google lists about 190; far fewer means a broken or partial download
MAX_BYTES = 1 << 16


def header(url: str, today: str, count: int) -> str:
    """The comment block at the top of the data file."""
    return f"""\
# Google's search domains: every `.google.<tld>` Google lists at
#   {url}
# hedgerow-dns sends google.<tld> and www.google.<tld> of each to forcesafesearch.google.com in
# groups with `safesearch = true` (agent/filter/safesearch_targets.py).
# Downloaded {today} by scripts/refresh_google_domains.py ({count} domains, in Google's order).
# Refresh: `.venv/bin/python scripts/refresh_google_domains.py` downloads the URL and rewrites
# this file (it refuses a download that does not look like the list); then run
# `.venv/bin/python -m pytest tests/test_dns_safesearch_domains.py` and commit the file.
"""


def domains_of(text: str) -> list[str]:
    """The list's domains in order; raises ValueError if the text is not Google's list."""
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lower()
        if not line:
            continue
        if LINE.fullmatch(line) is None:
            raise ValueError(f"line {number}: {raw!r} is not a .google.<tld> domain")
        if line not in out:
            out.append(line)
    if ".google.com" not in out or len(out) < MIN_DOMAINS:
        raise ValueError(f"{len(out)} domains: not Google's list (expected about 190)")
    return out


def main() -> int:
    """Download, check and write; exit 1 with a message if anything is wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=URL)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    try:
        with urllib.request.urlopen(args.url, timeout=30) as response:
            body = response.read(MAX_BYTES + 1)
        if len(body) > MAX_BYTES:
            raise ValueError(f"over {MAX_BYTES} bytes: not Google's list")
        domains = domains_of(body.decode("ascii"))
    except (OSError, UnicodeError, ValueError) as exc:
        print(f"refresh_google_domains: {args.url}: {exc}", file=sys.stderr)
        return 1
    today = dt.datetime.now(dt.UTC).date().isoformat()
    text = header(args.url, today, len(domains)) + "".join(f"{d}\n" for d in domains)
    output: Path = args.output
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=".google_domains.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; the package file is world-readable
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {output}: {len(domains)} domains from {args.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
