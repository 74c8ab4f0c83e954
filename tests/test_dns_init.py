"""hedgerow-dns init and the shipped example: a commented starter for a primary school that
`check` passes as written (no network: its lists are commented out), that never overwrites a
file, whose categories are the hub's own names, and that still passes `check`, with no
warning at all, once every commented setting is turned on with the school's list files."""

from __future__ import annotations

import re
from pathlib import Path

from agent.dns.starter import LIST_DIR, RECOMMENDED, STATUTORY, starter_text
from common.categories import lookup
from tests.test_dns_cli import run

EXAMPLE = Path(__file__).resolve().parent.parent / "firmware-config" / "hedgerow-dns.example.toml"
STATUTORY_WARNING = "warning: no statutory [[lists]] entry"


def check(path: Path) -> tuple[int, str, str]:
    result = run("check", "--config", str(path))
    return result.returncode, result.stdout, result.stderr


def test_init_writes_the_starter_and_check_passes_it(tmp_path: Path) -> None:
    out = tmp_path / "etc" / "hedgerow-dns.toml"
    out.parent.mkdir()
    result = run("init", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and f"hedgerow-dns check --config {out}" in result.stdout
    assert out.read_text(encoding="utf-8") == starter_text()
    code, stdout, stderr = check(out)
    assert code == 0, stderr
    assert "ok:" in stdout and "groups pupils, staff, guests" in stdout
    # What is missing is said: no statutory list yet.
    assert [line for line in stderr.splitlines() if line] == [
        next(line for line in stderr.splitlines() if line.startswith(STATUTORY_WARNING))
    ]


def test_init_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "hedgerow-dns.toml"
    out.write_text("# mine\n")
    result = run("init", "--out", str(out))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"hedgerow-dns: error: {out}: already exists; not overwriting it (choose --out)"
    ]
    assert out.read_text() == "# mine\n"
    missing = tmp_path / "no-such-dir" / "hedgerow-dns.toml"
    result = run("init", "--out", str(missing))
    assert result.returncode == 1 and "cannot write" in result.stderr


def test_the_shipped_example_is_the_starter_and_passes_check() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == starter_text(), (
        "refresh it: python -m agent.dns.starter > firmware-config/hedgerow-dns.example.toml"
    )
    code, stdout, stderr = check(EXAMPLE)
    assert code == 0, stderr
    assert "ok:" in stdout


def test_the_categories_are_the_ones_the_hub_knows() -> None:
    text = starter_text()
    for category in {*STATUTORY, *(c for group in RECOMMENDED.values() for c in group)}:
        shared = lookup(category)
        assert shared is not None and shared.name == category and shared.rule is not None
        assert f'#category = "{category}"' in text
    assert set(RECOMMENDED) == {"pupils", "staff", "guests"}
    assert "adult" in RECOMMENDED["pupils"] and "self_harm" in RECOMMENDED["staff"]


def turned_on(text: str, lists: Path, cache: Path) -> str:
    """Every commented setting turned on (`#key`, `#[table]`, array lines `#    ...`; prose
    is `# words`), each list source pointing at a real file."""
    text = re.sub(r"^#(?! \S)", "", text, flags=re.M)
    text = text.replace(f'"{LIST_DIR}/', f'"{lists}/')
    return text.replace('"/var/cache/hedgerow/lists"', f'"{cache}"')


def test_everything_turned_on_passes_check_without_a_warning(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    categories = [*STATUTORY, *dict.fromkeys(c for g in RECOMMENDED.values() for c in g)]
    for category in categories:
        (lists / f"{category}.txt").write_text(f"{category.replace('_', '-')}.example\n")
    config = tmp_path / "hedgerow-dns.toml"
    config.write_text(turned_on(starter_text(), lists, tmp_path / "cache"))
    assert "#[[lists]]" not in config.read_text() and "#block" not in config.read_text()
    code, stdout, stderr = check(config)
    assert code == 0, stderr
    assert stderr == ""
    assert f"ok: {config}: {len(categories)} lists, groups pupils, staff, guests" in stdout
    assert "category iwf: hub rule blocked_content, severity 5 by default" in stdout
    assert "category vpn: hub rule bypass, severity 4 by default" in stdout
    out = run("explain", "--config", str(config), "adult.example", "--client", "192.168.10.7")
    assert out.returncode == 0 and "verdict: blocked" in out.stdout, out.stderr
