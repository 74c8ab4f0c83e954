"""`make demo` keeps working: the whole system starts, answers, alerts and stops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_whole_system() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "adult.example.\t\t60\tIN\tA\t0.0.0.0" in out  # blocked for pupils
    assert "CNAME\tforcesafesearch.google.com." in out  # SafeSearch
    assert "status: REFUSED" in out  # never an open resolver
    assert "blocked_content" in out and "severity 4" in out  # the hub's alert
    # The laptop: on site by the Pi's beacon, off site still filtered, the hub's alerts.
    assert "site_state: on_site (signed)" in out
    assert "offsite_use" in out and "concern" in out
    assert "went off site" in out and "A concern was reported" in out
    assert "stopped everything the demo started" in out
