"""One line of a list, in each of the three formats, turned into (name, kind) entries.

This is the careful per-line path: `reader` uses it for any chunk its bulk fast path cannot
prove clean, and `explain` uses it to find the rule behind a verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.filter.lists.model import BLOCK, EXCEPT, EXCEPT_WILDCARD, WILDCARD
from agent.filter.lists.names import is_ipv4, normalise

HOSTS = "hosts"
PLAIN = "plain"
ADBLOCK = "adblock"

# Names every hosts file carries for the machine itself; never blocklist entries.
HOSTS_BOILERPLATE = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
        "0.0.0.0",
    }
)
# Modifiers that leave a rule a pure domain block. `$important` only changes priority over
# exceptions; we keep the simple "exceptions win" rule and say so in the docs.
_PURE_MODIFIERS = frozenset({"important", "all", "document", "doc", "first-party", "1p"})
_COSMETIC = ("##", "#@#", "#?#", "#$#", "#%#", "#@$#", "#@?#")
_ADDRESS = re.compile(r"[0-9a-fA-F:.%a-z]+")
_NOT_A_HOST = frozenset("/*^|?=&:")


@dataclass(slots=True)
class LineResult:
    """What one line holds: entries, and counts of skipped (unsupported) and invalid rules."""

    entries: list[tuple[str, int]] = field(default_factory=list)
    skipped: int = 0
    invalid: int = 0


def detect_format(sample: str) -> str:
    """Guess the format from the first lines of a file: adblock, hosts or plain."""
    adblock = hosts = plain = 0
    for raw in sample.splitlines()[:500]:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("!", "[Adblock", "||", "@@")) or "^" in line or "##" in line:
            adblock += 1
        elif len(line.split()) >= 2 and _is_address(line.split()[0]):
            hosts += 1
        else:
            plain += 1
    if adblock and adblock >= max(hosts, plain) / 4:
        return ADBLOCK
    return HOSTS if hosts > plain else PLAIN


def _is_address(token: str) -> bool:
    return is_ipv4(token) or (":" in token and _ADDRESS.fullmatch(token) is not None)


def _add_name(result: LineResult, token: str, kind: int) -> None:
    if "\ufffd" in token:  # undecodable bytes
        result.invalid += 1
        return
    if is_ipv4(token):
        result.skipped += 1
        return
    name = normalise(token)
    if name is None:
        result.invalid += 1
    else:
        result.entries.append((name, kind))


def _add_token(result: LineResult, token: str, exception: bool = False) -> None:
    if token.startswith("*."):
        _add_name(result, token[2:], EXCEPT_WILDCARD if exception else WILDCARD)
    elif "*" in token:
        result.skipped += 1  # wildcards inside a label are not domain rules
    else:
        _add_name(result, token, EXCEPT if exception else BLOCK)


def parse_domains_line(line: str) -> LineResult:
    """A hosts (`0.0.0.0 a b  # note`) or plain (`name`, `*.name`) line; `#` starts a comment."""
    result = LineResult()
    hash_at = line.find("#")
    tokens = (line if hash_at < 0 else line[:hash_at]).split()
    if len(tokens) == 1:
        _add_token(result, tokens[0])
    elif tokens:
        if not _is_address(tokens[0]):
            result.invalid += 1
            return result
        for token in tokens[1:]:
            if token.lower() in HOSTS_BOILERPLATE:
                result.skipped += 1
            else:
                _add_token(result, token)
    return result


def parse_adblock_line(line: str) -> LineResult:
    """An adblock line: `||name^`, `@@||name^`, `*.name`, `! comment`; others counted skipped."""
    result = LineResult()
    rule = line.strip()
    if not rule or rule[0] == "!" or (rule[0] == "[" and rule[-1] == "]"):
        return result
    if any(marker in rule for marker in _COSMETIC):
        result.skipped += 1
        return result
    if rule[0] == "#":
        return result  # some adblock-style lists use # comments too
    exception = rule.startswith("@@")
    if exception:
        rule = rule[2:]
    if "$" in rule:
        rule, _, modifiers = rule.partition("$")
        if not all(m.strip().lower() in _PURE_MODIFIERS for m in modifiers.split(",")):
            result.skipped += 1
            return result
    if len(rule) > 1 and rule[0] == "/" and rule[-1] == "/":
        result.skipped += 1  # regular expression
        return result
    if len(rule.split()) > 1:  # hosts syntax is allowed inside adblock lists
        return result if exception else parse_domains_line(rule)
    if rule.startswith("||"):
        rule = rule[2:]
    elif rule.startswith(("|", "//")) or "://" in rule:
        result.skipped += 1  # URL rules anchored at a scheme are not pure domain blocks
        return result
    if rule.endswith("^|"):
        rule = rule[:-2]
    elif rule.endswith("^"):
        rule = rule[:-1]
    if rule.startswith("."):
        rule = "*" + rule  # `.name^` matches only below name
    token = rule[2:] if rule.startswith("*.") else rule
    if not token or any(c in _NOT_A_HOST for c in token):
        result.skipped += 1
        return result
    _add_token(result, rule, exception)
    return result


def parse_line(fmt: str, line: str) -> LineResult:
    """Parse one line in the given format."""
    return parse_adblock_line(line) if fmt == ADBLOCK else parse_domains_line(line)
