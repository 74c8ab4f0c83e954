"""The reference: bare interpreters that import what the agent and its sniffer child import and
then only sleep, measured the same way as the real processes. Also the import profile: how much
resident memory each of those imports adds, and what the biggest packages cost alone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from tests.services import stop_process

# The agent's entry point, its service, and what service.py imports lazily at start
# (_start_watchers, start, the site check); agent.laptop.resolver.* is skipped because the
# bench runs with manage_system_resolver = false, as the agent then does not import it.
AGENT_IMPORTS = (
    "agent.laptop.cli",
    "agent.laptop.service",
    "agent.laptop.activity.sampler",
    "agent.laptop.site.netwatch",
    "agent.laptop.site.network_id",
    "agent.laptop.sniffer.supervisor",
    "agent.filter.spec",
    "common.categories",
)
# The sniffer child: its entry point and the capture module it imports (the one with scapy).
SNIFFER_IMPORTS = ("agent.laptop.sniffer.child", "agent.laptop.sniffer.capture")
READY = "reference ready"

_SLEEPER = """
import importlib, sys, time
for name in sys.argv[1:]:
    importlib.import_module(name)
sys.stdout.write("{ready}\\n")
sys.stdout.flush()
while True:
    time.sleep(3600)
"""

# Import one module at a time and say how much RSS each adds beyond the ones before; then list
# the top-level packages the imports brought in (for the standalone costs below).
_STEPS = """
import importlib, json, sys
def rss():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
before = set(sys.modules)
steps = [("(interpreter)", rss())]
for name in sys.argv[1:]:
    was = rss()
    importlib.import_module(name)
    steps.append((name, rss() - was))
packages = {}
for module in sorted(set(sys.modules) - before):
    root = module.split(".")[0]
    if root not in ("agent", "common") and not root.startswith("_"):
        packages.setdefault(root, []).append(module)
print(json.dumps({"steps": steps, "packages": packages}))
"""

# One top-level package alone in a fresh interpreter, with every submodule of it the imports
# above loaded: what it costs by itself, shared dependencies included (so the costs overlap and
# do not add up).
_ALONE = """
import importlib, sys
def rss():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
was = rss()
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # a platform-only submodule another import guarded
print(rss() - was)
"""


# One activity sample as the service takes it every SAMPLE_S (processes, connections,
# interfaces, the user), timed in CPU seconds in a fresh interpreter after a first, warming one.
_SAMPLE = """
import sys, time
from agent.laptop.activity.sampler import ActivitySampler
from agent.laptop.data import flagged_apps
sampler = ActivitySampler(flagged_apps=flagged_apps(), allowed_dns=lambda: ["127.0.0.1"])
sampler.sample()
count = int(sys.argv[1])
began = time.process_time()
for _ in range(count):
    sampler.sample()
print((time.process_time() - began) / count)
"""


@dataclass(frozen=True)
class Profile:
    """MiB of RSS each import added, in order, and the biggest top-level packages, each
    imported alone in a fresh interpreter, in MiB (largest first)."""

    steps: list[tuple[str, float]]
    packages: list[tuple[str, float]]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)
    if proc.stdout is not None:
        proc.stdout.close()


def _start(imports: tuple[str, ...]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLEEPER.format(ready=READY), *imports], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace").strip()
    if line != READY:
        _stop(proc)
        raise RuntimeError(f"reference interpreter for {imports} did not start: {line!r}")
    return proc


@contextmanager
def references() -> Iterator[dict[str, int]]:
    """Two sleeping reference interpreters; yields their pids by row name."""
    with ExitStack() as stack:
        pids: dict[str, int] = {}
        for name, imports in (("agent", AGENT_IMPORTS), ("sniffer", SNIFFER_IMPORTS)):
            proc = _start(imports)
            stack.callback(_stop, proc)
            pids[name] = proc.pid
        yield pids


def _python(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout


def profile(imports: tuple[str, ...], top: int = 8) -> Profile:
    """Import these in a fresh interpreter, one by one, and say what each cost; then the `top`
    biggest top-level packages they pull in, each alone."""
    data = json.loads(_python(_STEPS, *imports))
    alone = [(str(pkg), float(_python(_ALONE, *mods))) for pkg, mods in data["packages"].items()]
    alone.sort(key=lambda item: -item[1])
    return Profile([(str(n), float(v)) for n, v in data["steps"]], alone[:top])


def sample_cpu_s(count: int = 10) -> float:
    """CPU seconds one activity sample costs (the mean of `count`, after a warming one)."""
    return float(_python(_SAMPLE, str(count)))
