"""Property tests: parsing never fails with anything but ListError, and the compact index
agrees with a naive set-based reference on random lists and names."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.filter.lists import ListError, ListSpec, check_lists, load_lists, normalise, suffixes

LABELS = ["a", "b", "ex", "com", "xn--bcher-kva", "z-9", "_s"]
names = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(".".join)
KINDS = ("block", "wildcard", "except", "except-wildcard")
rules = st.lists(st.tuples(names, st.sampled_from(KINDS)), min_size=1, max_size=25)
categories = st.lists(
    st.tuples(st.sampled_from(["adblock", "plain", "hosts"]), rules), min_size=1, max_size=4
)


def render(fmt: str, entries: list[tuple[str, str]]) -> str:
    lines = []
    for name, kind in entries:
        shown = name.upper() if len(name) % 2 else name
        if fmt == "adblock":
            lines.append(
                {
                    "block": f"||{shown}^",
                    "wildcard": f"||*.{shown}^",
                    "except": f"@@||{shown}^",
                    "except-wildcard": f"@@||*.{shown}^",
                }[kind]
            )
        elif fmt == "plain" and kind in ("block", "wildcard"):
            lines.append(shown if kind == "block" else f"*.{shown}.")
        elif fmt == "hosts" and kind == "block":
            lines.append(f"0.0.0.0 {shown}")
    return "\n".join(["! header" if fmt == "adblock" else "# header", *lines]) + "\n"


def reference(qname: str, lists: list[tuple[str, list[tuple[str, str]]]]) -> int:
    mask = 0
    for bit, (fmt, entries) in enumerate(lists):
        kept = [(n, k) for n, k in entries if render(fmt, [(n, k)]).count("\n") == 2]
        if not any(k in ("block", "wildcard") for _, k in kept):
            continue  # such a list is refused as empty; see the test
        blocked = excepted = False
        for suffix in suffixes(qname):
            exact = suffix == qname
            for name, kind in kept:
                if name != suffix:
                    continue
                if kind == "block" or (kind == "wildcard" and not exact):
                    blocked = True
                if kind == "except" or (kind == "except-wildcard" and not exact):
                    excepted = True
        if blocked and not excepted:
            mask |= 1 << bit
    return mask


@settings(max_examples=80, deadline=None)
@given(categories, st.lists(names, min_size=1, max_size=20))
def test_index_agrees_with_reference(
    lists: list[tuple[str, list[tuple[str, str]]]], queries: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        usable = []
        for i, (fmt, entries) in enumerate(lists):
            text = render(fmt, entries)
            if text.count("\n") == 1 or all(k.startswith("except") for _, k in entries):
                continue  # nothing to block: refused as empty, tested elsewhere
            path = Path(tmp) / f"{i}.txt"
            path.write_text(text)
            specs.append(ListSpec(f"c{i}", str(path)))
            usable.append((fmt, entries))
        if not specs:
            return
        index, _ = load_lists(specs, None)
        for qname in queries:
            assert index.lookup(qname) == reference(qname, usable), qname


@settings(max_examples=120, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_parsing_raises_only_list_error(content: bytes | str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.txt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            (stats,) = check_lists([ListSpec("c", str(path))])
        except ListError as exc:
            assert str(path) in str(exc)
        else:
            assert stats.entries + stats.exceptions > 0


ADBLOCKISH = st.lists(
    st.sampled_from(
        ["||", "@@", "^", "$", "*", ".", "/", "|", "#", "##", "!", " ", "a", "é", "\n"]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=120, deadline=None)
@given(ADBLOCKISH)
def test_adblock_like_noise_raises_only_list_error(content: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.txt"
        path.write_text("! x\n" + content, encoding="utf-8")
        with contextlib.suppress(ListError):
            check_lists([ListSpec("c", str(path))])


@given(st.text(max_size=80))
def test_normalise_is_total_and_idempotent(raw: str) -> None:
    once = normalise(raw)
    if once is not None:
        assert normalise(once) == once
        assert once == once.lower() and not once.endswith(".") and once.isascii()
