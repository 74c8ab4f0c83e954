"""The Pi's first-boot set-up: firmware-config/pi/setup.sh (shellcheck, a dry run that changes
nothing, refusing what is not Debian-like) and firmware-config/pi/cloud-init/user-data (a schema
check when cloud-init is here, else a YAML parse with the system's PyYAML, else a small check).

setup.sh is never run for real here: it installs packages and adds a user on the host."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.netns_support import ROOT

PI_DIR = ROOT / "firmware-config" / "pi"
SETUP = PI_DIR / "setup.sh"
USER_DATA = PI_DIR / "cloud-init" / "user-data"
STEPS = ("packages", "user", "dirs", "venv", "config", "nftables", "upgrades", "address", "service")
# What a real run would create or change; a dry run must leave each exactly as it was.
TOUCHED = (
    "/opt/hedgerow",
    "/etc/hedgerow",
    "/var/lib/hedgerow",
    "/var/cache/hedgerow",
    "/etc/apt/apt.conf.d/20auto-upgrades",
    "/usr/local/bin/hedgerow-dns",
    "/etc/systemd/system/hedgerow-dns.service",
)
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
RASPBIAN = 'PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\nID=raspbian\nID_LIKE=debian\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\n'
ALPINE = 'NAME="Alpine Linux"\nID=alpine\n'


def setup_sh(*args: str, os_release: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run setup.sh with arguments (and a chosen os-release file), returning what it did."""
    env = dict(os.environ)
    if os_release is not None:
        env["HEDGEROW_OS_RELEASE"] = str(os_release)
    return subprocess.run(
        ["bash", str(SETUP), *args], capture_output=True, text=True, timeout=60, env=env
    )


def host_state() -> dict[str, object]:
    """What exists of the paths a real run touches, and whether the hedgerow user exists."""
    state: dict[str, object] = {path: os.path.lexists(path) for path in TOUCHED}
    user = subprocess.run(["id", "hedgerow"], capture_output=True, timeout=10)
    state["user hedgerow"] = user.returncode == 0
    return state


def test_setup_sh_passes_shellcheck() -> None:
    """shellcheck (all severities) when installed, else at least bash's own syntax check."""
    if shutil.which("shellcheck"):
        command = ["shellcheck", "--severity=style", str(SETUP)]
    else:
        command = ["bash", "-n", str(SETUP)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    assert SETUP.read_text().splitlines()[:12].count("set -euo pipefail") == 1
    assert os.access(SETUP, os.X_OK), "setup.sh must be executable"


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    """A dry run names each step, prints the commands, and leaves the host as it was."""
    os_release = tmp_path / "os-release"
    os_release.write_text(DEBIAN)
    before = host_state()
    args = ("--dry-run", "--address", "10.10.0.53/24", "--gateway", "10.10.0.1")
    done = setup_sh(*args, os_release=os_release)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("dry run: nothing will be changed\n")
    for step in STEPS:
        assert f"[{step}] " in out, f"step {step} missing:\n{out}"
    assert "ipv4.addresses 10.10.0.53/24 ipv4.gateway 10.10.0.1" in out
    assert "would run: systemctl enable --now hedgerow-dns.service" in out
    assert f"pip install --quiet --upgrade {ROOT}" in out
    assert host_state() == before
    # Twice in a row: the same plan (a dry run has no side effect the second run could see).
    again = setup_sh(*args, os_release=os_release)
    assert (again.returncode, again.stdout) == (0, out)


@pytest.mark.parametrize("text", [DEBIAN, RASPBIAN, UBUNTU], ids=["debian", "raspbian", "ubuntu"])
def test_dry_run_accepts_debian_like(tmp_path: Path, text: str) -> None:
    """Debian, Raspberry Pi OS and Ubuntu are Debian-like."""
    os_release = tmp_path / "os-release"
    os_release.write_text(text)
    done = setup_sh("--dry-run", os_release=os_release)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (FEDORA, "refusing: this is 'fedora', not Debian-like"),
        (ALPINE, "refusing: this is 'alpine', not Debian-like"),
        (None, "cannot tell this is Debian-like"),
    ],
    ids=["fedora", "alpine", "no-os-release"],
)
def test_refuses_what_is_not_debian_like(tmp_path: Path, text: str | None, message: str) -> None:
    """Anything else is refused before a single step. (Dry runs only, here and below: should
    the refusal ever break, a real run would change this host.)"""
    os_release = tmp_path / "os-release"
    if text is not None:
        os_release.write_text(text)
    done = setup_sh("--dry-run", os_release=os_release)
    assert done.returncode == 1
    assert message in done.stderr
    assert "[packages]" not in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--dry-run", "--bogus"), 2, "unknown argument: --bogus"),
        (("--dry-run", "--address", "10.10.0.53/24"), 1, "--address needs --gateway"),
    ],
)
def test_bad_arguments_are_refused(args: tuple[str, ...], code: int, message: str) -> None:
    """A mistyped option stops it before anything is done."""
    done = setup_sh(*args)
    assert done.returncode == code
    assert message in done.stderr
    assert "[packages]" not in done.stdout


def system_yaml(path: Path) -> Any:
    """The file parsed by the system Python's PyYAML, or None when there is none (the project
    does not depend on PyYAML, so the venv never has it)."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        return None
    code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    probe = subprocess.run([python, "-c", "import yaml"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return None
    done = subprocess.run(
        [python, "-c", code, str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"user-data is not YAML: {done.stderr}"
    return json.loads(done.stdout)


def small_check(text: str) -> None:
    """Without a YAML parser: the cloud-config marker, no tabs, unique top-level keys."""
    assert "\t" not in text, "YAML forbids tabs for indentation"
    keys = [m.group(1) for m in re.finditer(r"^([a-z_]+):", text, re.M)]
    assert len(keys) == len(set(keys)), f"a top-level key twice: {keys}"
    for key in ("users", "packages", "write_files", "runcmd"):
        assert key in keys


def test_cloud_init_user_data_is_valid() -> None:
    """Schema check if cloud-init is here; the parsed document says what the Pi needs."""
    text = USER_DATA.read_text()
    assert text.startswith("#cloud-config\n"), "cloud-init ignores user-data without it"
    if shutil.which("cloud-init"):
        done = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(USER_DATA)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    data = system_yaml(USER_DATA)
    if data is None:
        small_check(text)
        return
    users = {user["name"]: user for user in data["users"] if isinstance(user, dict)}
    assert users["hedgerow"]["system"] is True
    assert users["hedgerow"]["shell"] == "/usr/sbin/nologin"
    assert {"nftables", "unattended-upgrades", "python3-venv"} <= set(data["packages"])
    files = {item["path"]: item for item in data["write_files"]}
    assert (
        'APT::Periodic::Unattended-Upgrade "1";'
        in files["/etc/apt/apt.conf.d/20auto-upgrades"]["content"]
    )
    commands = [" ".join(map(str, command)) for command in data["runcmd"]]
    assert "systemctl enable --now hedgerow-dns.service" in commands
    assert any("/etc/hedgerow/lists" in command for command in commands)
    assert any(c.startswith("/opt/hedgerow/venv/bin/pip install") for c in commands)
    # The static address is an example to edit, so it is commented out.
    assert "#     address1=10.10.0.53/24,10.10.0.1" in text


def test_user_data_and_setup_sh_agree() -> None:
    """Both ways onto a Pi install the same packages, and every release file user-data copies
    from the checkout is in this one (systemd/ is the units' own work and checked there)."""
    debs = re.search(r"^DEBS=\(([^)]*)\)$", SETUP.read_text(), re.M)
    assert debs is not None
    listed = re.search(r"^packages:\n((?:  - .*\n)+)", USER_DATA.read_text(), re.M)
    assert listed is not None
    assert debs.group(1).split() == [line[4:] for line in listed.group(1).splitlines()]
    sources = set(re.findall(r"/opt/hedgerow/src/([\w./-]+)", USER_DATA.read_text()))
    assert "firmware-config/pi/nftables/hedgerow.nft" in sources
    for source in sources:
        if not source.startswith("systemd/"):
            assert (ROOT / source).is_file(), source
