"""The filtering page and its JSON API: blocked attempts by category per day, by group and by
site, the names blocked most, and what the policies block and allow and when that changed.
Aggregates only (hub/filtering.py): governors may see all of it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from common.errors import HedgerowError
from hub.filtering import (
    Window,
    blocked_by_group,
    blocked_by_site,
    blocked_per_day,
    policy_log,
    top_names,
)
from hub.policy.publish import known_sites
from hub.policy.settings import load_policy_settings
from hub.reports import Table
from hub.web.auth import Needs, web_context
from hub.web.charts import Series, bar_chart, line_chart
from hub.web.context import hub_config
from hub.web.pages import _render
from hub.web.permissions import Permission, Principal

router = APIRouter()
_VIEW = Annotated[Principal, Depends(Needs(Permission.AGGREGATES_VIEW))]
_DAYS = Annotated[int, Query(ge=1, le=92)]
# Said on the page and in the API: where "who decided" comes from.
WHO_DECIDED = (
    "The settings come from [policy] in hub.toml (or DATA/policy/<site>.toml). Who decided a "
    "change is what `hedgerow-hub policy publish --by NAME --reason TEXT` recorded (by default "
    "the login that ran it); a change the hub signed when it started names hub.toml instead, "
    "since the hub cannot know who edited the file."
)


@dataclass(frozen=True, slots=True)
class GroupNow:
    """A group's filtering in the settings the hub signs at its next publish."""

    site: str
    group: str
    block: tuple[str, ...]
    allow: tuple[str, ...]
    safesearch: bool
    youtube: str

    def to_json(self) -> dict[str, Any]:
        """As the JSON API gives it."""
        return {
            "site": self.site,
            "group": self.group,
            "block": list(self.block),
            "allow": list(self.allow),
            "safesearch": self.safesearch,
            "youtube": self.youtube,
        }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _current(request: Request) -> tuple[list[GroupNow], list[str]]:
    """Every site's groups as configured now, and the problems of settings that do not load."""
    config = hub_config(request)
    with web_context(request).db() as db:
        all_sites = known_sites(db, config)
    groups: list[GroupNow] = []
    problems: list[str] = []
    for site in all_sites:
        try:
            settings = load_policy_settings(config, site)
        except HedgerowError as exc:
            problems.append(f"site {site}: {exc}")
            continue
        groups += [
            GroupNow(site, g.name, g.block, g.allow, g.safesearch, g.youtube)
            for g in settings.groups
        ]
    return groups, problems


def _bar(table: Table) -> Markup | None:
    if not table.rows:
        return None
    return bar_chart(
        table.caption,
        f"{table.caption}: one bar per {table.headers[0].lower()}.",
        [str(r[0]) for r in table.rows],
        [Series(table.headers[1], tuple(float(r[1]) for r in table.rows))],
    )


@router.get("/filtering", include_in_schema=False)
def filtering_page(request: Request, principal: _VIEW, days: _DAYS = 30) -> Response:
    """Blocked attempts over the last `days` days, and the policy log."""
    window = Window.last(days, _now_ms())
    with web_context(request).db() as db:
        labels, per_day = blocked_per_day(db, window)
        by_group = blocked_by_group(db, window)
        by_site = blocked_by_site(db, window)
        names = top_names(db, window)
        changes = policy_log(db)
    per_day_chart = None
    if per_day:
        per_day_chart = line_chart(
            f"Blocked attempts per day by category, last {days} days",
            "One line per category (the six biggest, the rest as other), one point per day (UTC).",
            labels,
            [Series(c, tuple(float(v) for v in values)) for c, values in per_day.items()],
            unit="attempts",
        )
    current, problems = _current(request)
    return _render(
        request,
        "filtering.html",
        principal,
        window=window,
        first_day=labels[0],
        last_day=labels[-1],
        per_day_chart=per_day_chart,
        group_chart=_bar(by_group),
        site_chart=_bar(by_site),
        names=names,
        changes=changes,
        current=current,
        problems=problems,
        who_decided=WHO_DECIDED,
    )


def _table_json(table: Table) -> dict[str, Any]:
    return {"caption": table.caption, "headers": list(table.headers), "rows": table.rows}


@router.get("/api/filtering", tags=["dashboard"])
def filtering_json(request: Request, principal: _VIEW, days: _DAYS = 30) -> dict[str, Any]:
    """Blocked attempts per day by category, by group and by site, and the top names."""
    window = Window.last(days, _now_ms())
    with web_context(request).db() as db:
        labels, per_day = blocked_per_day(db, window)
        tables = [
            blocked_by_group(db, window),
            blocked_by_site(db, window),
            top_names(db, window),
        ]
    return {
        "days": days,
        "start_ms": window.start_ms,
        "end_ms": window.end_ms,
        "per_day": {"days": labels, "categories": per_day},
        "tables": {t.name: _table_json(t) for t in tables},
    }


@router.get("/api/filtering/policy", tags=["dashboard"])
def policy_json(request: Request, principal: _VIEW) -> dict[str, Any]:
    """What each group blocks and allows now, and each signed change, newest first."""
    with web_context(request).db() as db:
        changes = policy_log(db)
    current, problems = _current(request)
    return {
        "current": [g.to_json() for g in current],
        "problems": problems,
        "changes": [c.to_json() for c in changes],
        "who_decided": WHO_DECIDED,
    }
