"""The devices pages and their JSON API: the device list, one device's state and its time off
site, and revoking a device (the code path of `hedgerow-hub revoke`); enrolment tokens are in
hub/web/enrolment.py, included here. No pupil activity: no blocked name, user or address is
shown.

Each device revoked is written to the access log (what: "device revoked"), beside the views of
one device ("device"), so the DSL reads who did it at /access-log."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from common.errors import HedgerowError
from hub.broker_session import clear_device_policy
from hub.enroll.broker import BrokerFiles, write_broker_files
from hub.errors import StoreError
from hub.fleet import (
    LAPTOPS,
    STATE_WORDS,
    DeviceStatus,
    device_page,
    device_status,
    site_days,
    sites,
)
from hub.store import Database
from hub.store.devices import revoke_device
from hub.web.access_log import record_view
from hub.web.auth import Needs, check_csrf, web_context
from hub.web.charts import Series, bar_chart
from hub.web.context import hub_config
from hub.web.enrolment import router as enrolment_router
from hub.web.pages import _render
from hub.web.permissions import Permission, Principal
from hub.web.queue import QueueError

log = logging.getLogger(__name__)
router = APIRouter()
_VIEW = Annotated[Principal, Depends(Needs(Permission.DEVICES_VIEW))]
_MANAGE = Annotated[Principal, Depends(Needs(Permission.DEVICES_MANAGE))]
DEVICE_REVOKED = "device revoked"


class DeviceMissing(Exception):
    """No such device: answered 404."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _cursor(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    site, sep, device = text.partition("/")
    if not sep or not site or not device:
        raise QueueError("the cursor must be site/device")
    return site, device


def _find(db: Database, site: str, device: str) -> DeviceStatus:
    found = device_status(db, site, device)
    if found is None:
        raise DeviceMissing(f"There is no device {site}/{device}.")
    return found


@router.get("/devices", include_in_schema=False)
def devices_page(
    request: Request,
    principal: _VIEW,
    site: Annotated[str | None, Query(max_length=63)] = None,
    cursor: Annotated[str | None, Query(max_length=130)] = None,
) -> Response:
    """Every device with its state and health, by site and id, 100 a page."""
    with web_context(request).db() as db:
        devices, following = device_page(db, site=site or None, after=_cursor(cursor))
        all_sites = sites(db)
    older = None
    if following is not None:
        query = {"cursor": "/".join(following), **({"site": site} if site else {})}
        older = "/devices?" + urlencode(query)
    return _render(
        request,
        "devices.html",
        principal,
        devices=devices,
        sites=all_sites,
        site=site or "",
        following=older,
        states=STATE_WORDS,
    )


def _offsite_chart(db: Database, status: DeviceStatus) -> tuple[Any, int]:
    """The laptop's hours off and on site per day, and how many summaries said; a DNS filter
    has none (it stays where it is installed)."""
    if status.info.device_class not in LAPTOPS:
        return None, 0
    days = site_days(db, status.info.site, status.info.device, _now_ms())
    chart = bar_chart(
        "Hours off site and on site per day, last 30 days",
        "One pair of bars per day (UTC): the hours this laptop's summaries counted off site "
        "and on site.",
        [d.day for d in days],
        [
            Series("Off site", tuple(d.off_site_h for d in days)),
            Series("On site", tuple(d.on_site_h for d in days)),
        ],
        unit="hours",
    )
    return chart, sum(d.summaries for d in days)


def _missing(request: Request, principal: Principal, site: str, device: str) -> Response:
    response = _render(
        request,
        "error.html",
        principal,
        status=404,
        message=f"There is no device {site}/{device}.",
    )
    response.status_code = 404
    return response


@router.get("/devices/{site}/{device}", include_in_schema=False)
def device_detail(request: Request, site: str, device: str, principal: _VIEW) -> Response:
    """One device: its state, health and versions, and its time off site over 30 days."""
    with web_context(request).db() as db:
        try:
            status = _find(db, site, device)
        except DeviceMissing:
            return _missing(request, principal, site, device)
        chart, summaries = _offsite_chart(db, status)
        record_view(db, principal, "device", f"{site}/{device}", "page")
    return _render(
        request,
        "device.html",
        principal,
        d=status,
        chart=chart,
        summaries=summaries,
        states=STATE_WORDS,
        error=None,
        done=request.query_params.get("done"),
    )


@dataclass(frozen=True, slots=True)
class Revoked:
    """What revoking did: whether the device changed, and how the broker files went."""

    changed: bool
    files: BrokerFiles | None
    error: str | None  # the broker files could not be written
    policy_left: str | None = None  # why its retained policy is still on the broker, if it is

    def message(self, site: str, device: str) -> str:
        """For people: what happened, and what the broker did with it."""
        head = f"{site}/{device} {'revoked' if self.changed else 'was already revoked'}"
        if self.error is not None:
            return f"{head}, but the broker accounts were not rewritten: {self.error}"
        if self.files and self.files.reload is not None and not self.files.reload.ok:
            return (
                f"{head}; the broker did NOT reload its accounts (a security alert is raised): "
                "it keeps the device's account until Mosquitto reloads"
            )
        if self.policy_left is not None:
            return (
                f"{head}; its broker account is removed, but its retained policy is still on "
                f"the broker ({self.policy_left}) until the next policy publish"
            )
        return f"{head}; its broker account and retained policy are removed"


def _revoke(request: Request, principal: Principal, site: str, device: str, via: str) -> Revoked:
    """`hedgerow-hub revoke`'s code path: mark the device revoked, then rewrite the broker
    files without its account (also when it was revoked already, so a failed reload can be
    retried), and write who did it to the access log."""
    config = hub_config(request)
    with web_context(request).db() as db:
        try:
            changed = revoke_device(db, site, device, _now_ms())
        except StoreError:
            raise DeviceMissing(f"There is no device {site}/{device}.") from None
        record_view(db, principal, DEVICE_REVOKED, f"{site}/{device}", via)
        log.info("%s revoked device %s/%s from the dashboard", principal.username, site, device)
        try:
            files = write_broker_files(db, config)
        except HedgerowError as exc:
            return Revoked(changed, None, str(exc))
    return Revoked(changed, files, None, clear_device_policy(config, site, device))


@router.post("/devices/{site}/{device}/revoke", include_in_schema=False)
def revoke_page(
    request: Request,
    site: str,
    device: str,
    principal: _MANAGE,
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Revoke the device; back to its page, which says what happened."""
    check_csrf(request, csrf)
    try:
        done = _revoke(request, principal, site, device, "page")
    except DeviceMissing:
        return _missing(request, principal, site, device)
    if done.error is None:
        return RedirectResponse(f"/devices/{site}/{device}?done=revoked", status_code=303)
    with web_context(request).db() as db:
        status = _find(db, site, device)
        chart, summaries = _offsite_chart(db, status)
    response = _render(
        request,
        "device.html",
        principal,
        d=status,
        chart=chart,
        summaries=summaries,
        states=STATE_WORDS,
        error=done.message(site, device),
        done=None,
    )
    response.status_code = 500
    return response


# --- JSON API ---


@router.get("/api/devices", tags=["dashboard"])
def list_devices_json(
    request: Request,
    principal: _VIEW,
    site: Annotated[str | None, Query(max_length=63)] = None,
    cursor: Annotated[str | None, Query(max_length=130)] = None,
) -> dict[str, Any]:
    """Devices with their state and health, 100 a page; `next_cursor` for the next."""
    with web_context(request).db() as db:
        devices, following = device_page(db, site=site or None, after=_cursor(cursor))
    return {
        "devices": [d.to_json() for d in devices],
        "next_cursor": "/".join(following) if following else None,
    }


@router.get("/api/devices/{site}/{device}", tags=["dashboard"], response_model=None)
def device_json(request: Request, site: str, device: str, principal: _VIEW) -> Any:
    """One device and its hours off and on site per day over 30 days (written to the access
    log)."""
    with web_context(request).db() as db:
        status = device_status(db, site, device)
        if status is None:
            return JSONResponse({"detail": f"no device {site}/{device}"}, status_code=404)
        laptop = status.info.device_class in LAPTOPS
        days = site_days(db, site, device, _now_ms()) if laptop else []
        record_view(db, principal, "device", f"{site}/{device}", "api")
    return {
        **status.to_json(),
        "site_days": [
            {
                "day": d.day,
                "off_site_h": d.off_site_h,
                "on_site_h": d.on_site_h,
                "summaries": d.summaries,
            }
            for d in days
        ],
    }


@router.post("/api/devices/{site}/{device}/revoke", tags=["dashboard"], response_model=None)
def revoke_json(request: Request, site: str, device: str, principal: _MANAGE) -> Any:
    """Revoke the device, as `hedgerow-hub revoke` does."""
    try:
        done = _revoke(request, principal, site, device, "api")
    except DeviceMissing as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    return {
        "revoked": True,
        "changed": done.changed,
        "message": done.message(site, device),
        "broker_rewritten": done.error is None,
        "policy_removed": done.policy_left is None,
    }


# The token routes' paths (/devices/tokens...) never match /devices/{site}/{device}: they have
# one segment fewer.
router.include_router(enrolment_router)
