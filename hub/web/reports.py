"""The reports: the weekly digest and the governors' annual review, their CSV and JSON, and
the review's sign-off. Aggregates only (hub/reports.py)."""

from __future__ import annotations

import csv
import io
import time
from importlib.util import find_spec
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from hub.checks import CheckError, sign_review, signoffs
from hub.reports import Period, ReportError, Table, academic_year, annual, week_period, weekly
from hub.web.auth import Needs, check_csrf, web_context
from hub.web.charts import Series, bar_chart
from hub.web.pages import _render
from hub.web.permissions import Permission, Principal
from hub.web.queue import QueueError

router = APIRouter()
_VIEW = Annotated[Principal, Depends(Needs(Permission.REPORTS_VIEW))]
_YEAR = Annotated[int | None, Query(ge=2000, le=2999)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _year(year: int | None) -> Period:
    try:
        return academic_year(year, _now_ms())
    except ReportError as exc:
        raise QueueError(str(exc)) from None


def _week(week: str | None) -> Period:
    try:
        return week_period(week, _now_ms())
    except ReportError as exc:
        raise QueueError(str(exc)) from None


def _chart(table: Table) -> Markup | None:
    """A bar chart of a two-column (label, number) table, else None."""
    if len(table.headers) != 2 or not table.rows:
        return None
    return bar_chart(
        table.caption,
        f"{table.caption}: one bar per {table.headers[0].lower()}.",
        [str(r[0]) for r in table.rows],
        [Series(table.headers[1], tuple(float(r[1]) for r in table.rows))],
    )


def _json(period: Period, tables: list[Table]) -> dict[str, Any]:
    return {
        "period": period.label,
        "start_ms": period.start_ms,
        "end_ms": period.end_ms,
        "tables": {
            t.name: {"caption": t.caption, "headers": list(t.headers), "rows": t.rows}
            for t in tables
        },
    }


@router.get("/reports", include_in_schema=False)
def reports_index(request: Request, principal: _VIEW) -> Response:
    """The reports there are: this week's digest and this academic year's review."""
    now = _now_ms()
    return _render(
        request,
        "reports.html",
        principal,
        week=week_period(None, now),
        year=academic_year(None, now),
    )


@router.get("/reports/weekly", include_in_schema=False)
def weekly_page(request: Request, principal: _VIEW, week: str | None = None) -> Response:
    """The weekly digest of ISO week `week` (YYYY-Www, default this week)."""
    period = _week(week)
    with web_context(request).db() as db:
        tables = weekly(db, period)
    charts = {t.name: _chart(t) for t in tables}
    return _render(
        request, "report_weekly.html", principal, period=period, tables=tables, charts=charts
    )


def _annual_values(request: Request, period: Period) -> dict[str, Any]:
    with web_context(request).db() as db:
        tables = annual(db, period, _now_ms())
        signed = signoffs(db, period.label)
    return {"period": period, "tables": tables, "signed": signed}


def _start_year(period: Period) -> int:
    return int(period.label[:4])


@router.get("/reports/annual", include_in_schema=False)
def annual_page(request: Request, principal: _VIEW, year: _YEAR = None) -> Response:
    """The governors' annual review of the academic year from 1 September `year`."""
    period = _year(year)
    values = _annual_values(request, period)
    return _render(
        request,
        "report_annual.html",
        principal,
        **values,
        start_year=_start_year(period),
        pdf=find_spec("weasyprint") is not None,
        error=None,
    )


@router.get("/reports/annual.pdf", include_in_schema=False)
def annual_pdf(request: Request, principal: _VIEW, year: _YEAR = None) -> Response:
    """The review as PDF, when the optional `pdf` extra (WeasyPrint) is installed."""
    if find_spec("weasyprint") is None:
        raise QueueError("PDF needs the optional pdf extra; print to PDF from the browser.")
    import weasyprint  # type: ignore[import-not-found, unused-ignore]

    period = _year(year)
    page = _render(
        request,
        "report_annual.html",
        principal,
        **_annual_values(request, period),
        start_year=_start_year(period),
        pdf=False,
        error=None,
    )
    html = bytes(page.body).decode()
    pdf = weasyprint.HTML(string=html, base_url=str(request.base_url)).write_pdf()
    return Response(
        bytes(pdf),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="review-{period.label}.pdf"'},
    )


@router.get("/reports/annual/{table}.csv", include_in_schema=False)
def annual_csv(request: Request, table: str, principal: _VIEW, year: _YEAR = None) -> Response:
    """One table of the review as CSV."""
    period = _year(year)
    with web_context(request).db() as db:
        tables = {t.name: t for t in annual(db, period, _now_ms())}
    if table not in tables:
        raise QueueError(f"the review has no table {table!r}")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(tables[table].headers)
    for row in tables[table].rows:
        # A leading =, +, - or @ would be a formula to a spreadsheet.
        writer.writerow(["'" + c if isinstance(c, str) and c[:1] in "=+-@" else c for c in row])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{table}-{period.label}.csv"'},
    )


@router.post("/reports/annual/sign", include_in_schema=False)
def sign(
    request: Request,
    principal: _VIEW,
    csrf: Annotated[str, Form(max_length=64)] = "",
    year: Annotated[int, Form(ge=2000, le=2999)] = 2000,
    signed_as: Annotated[str, Form(max_length=2000)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Sign the review (append-only: who, as whom, when, a note)."""
    check_csrf(request, csrf)
    period = _year(year)
    try:
        with web_context(request).db() as db:
            sign_review(
                db,
                period.label,
                _now_ms(),
                principal.username,
                str(principal.role),
                signed_as,
                note,
            )
    except CheckError as exc:
        response = _render(
            request,
            "report_annual.html",
            principal,
            **_annual_values(request, period),
            start_year=year,
            pdf=find_spec("weasyprint") is not None,
            error=str(exc),
        )
        response.status_code = 400
        return response
    return RedirectResponse(f"/reports/annual?year={year}#sign-off", status_code=303)


@router.get("/api/reports/weekly", tags=["dashboard"])
def weekly_json(request: Request, principal: _VIEW, week: str | None = None) -> dict[str, Any]:
    """The weekly digest's tables."""
    period = _week(week)
    with web_context(request).db() as db:
        return _json(period, weekly(db, period))


@router.get("/api/reports/annual", tags=["dashboard"])
def annual_json(request: Request, principal: _VIEW, year: _YEAR = None) -> dict[str, Any]:
    """The annual review's tables and its signatures."""
    period = _year(year)
    with web_context(request).db() as db:
        body = _json(period, annual(db, period, _now_ms()))
        body["signoffs"] = [
            {"at_ms": s.at_ms, "signed_as": s.signed_as, "role": s.role, "note": s.note}
            for s in signoffs(db, period.label)
        ]
    return body
