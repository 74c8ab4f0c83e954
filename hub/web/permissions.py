"""Who may do what: one table of role -> permissions, read by pages and the JSON API alike."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """The dashboard's roles (docs/dashboard.md)."""

    DSL = "dsl"
    DSL_LIMITED = "dsl_limited"  # a DSL for chosen groups only
    COORDINATOR = "coordinator"
    TECHNICIAN = "technician"  # devices and enrolment, never pupil activity
    GOVERNOR = "governor"  # aggregates only, never an individual
    ADMIN = "admin"


class Permission(StrEnum):
    """One thing a person may see or do."""

    HOME = "home"  # the home page and one's own account
    ALERTS_VIEW = "alerts.view"  # individual alerts: queue, detail, evidence, trail, timeline
    ALERTS_ACT = "alerts.act"  # acknowledge, assign, note, escalate, close, reopen
    CONCERNS_OPEN = "concerns.open"  # record a concern (from alerts or by hand) for the DSL
    CONCERNS_VIEW = "concerns.view"  # read concerns, amend them, chronologies, export
    AGGREGATES_VIEW = "aggregates.view"  # counts without any individual: filtering, charts
    DEVICES_VIEW = "devices.view"  # the device list and each device's state and health
    DEVICES_MANAGE = "devices.manage"  # enrolment tokens, revoking a device
    CHECKS_VIEW = "checks.view"  # the checks register
    CHECKS_RECORD = "checks.record"  # add a manual check to the register
    REPORTS_VIEW = "reports.view"  # the weekly digest and the governors' annual review
    ACCESS_LOG_VIEW = "access_log.view"


_DSL = frozenset(
    {
        Permission.HOME,
        Permission.ALERTS_VIEW,
        Permission.ALERTS_ACT,
        Permission.CONCERNS_OPEN,
        Permission.CONCERNS_VIEW,
        Permission.AGGREGATES_VIEW,
        Permission.DEVICES_VIEW,
        Permission.CHECKS_VIEW,
        Permission.CHECKS_RECORD,
        Permission.REPORTS_VIEW,
        Permission.ACCESS_LOG_VIEW,
    }
)
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.DSL: _DSL,
    Role.DSL_LIMITED: frozenset(
        {
            Permission.HOME,
            Permission.ALERTS_VIEW,
            Permission.ALERTS_ACT,
            Permission.CONCERNS_OPEN,
            Permission.CONCERNS_VIEW,
        }
    ),
    # The co-ordinator triages and records concerns for the DSL, but reads no concern record.
    Role.COORDINATOR: frozenset(
        {
            Permission.HOME,
            Permission.ALERTS_VIEW,
            Permission.ALERTS_ACT,
            Permission.CONCERNS_OPEN,
            Permission.AGGREGATES_VIEW,
            Permission.DEVICES_VIEW,
            Permission.CHECKS_VIEW,
            Permission.CHECKS_RECORD,
            Permission.REPORTS_VIEW,
        }
    ),
    Role.TECHNICIAN: frozenset(
        {
            Permission.HOME,
            Permission.DEVICES_VIEW,
            Permission.DEVICES_MANAGE,
            Permission.CHECKS_VIEW,
            Permission.CHECKS_RECORD,
        }
    ),
    Role.GOVERNOR: frozenset(
        {
            Permission.HOME,
            Permission.AGGREGATES_VIEW,
            Permission.CHECKS_VIEW,
            Permission.REPORTS_VIEW,
        }
    ),
    Role.ADMIN: frozenset(
        {
            Permission.HOME,
            Permission.AGGREGATES_VIEW,
            Permission.DEVICES_VIEW,
            Permission.DEVICES_MANAGE,
            Permission.CHECKS_VIEW,
            Permission.ACCESS_LOG_VIEW,
        }
    ),
}
# Roles whose individual data is limited to the groups on their account.
GROUP_LIMITED = frozenset({Role.DSL_LIMITED})


@dataclass(frozen=True, slots=True)
class Principal:
    """The person behind a request: account, role and (for dsl_limited) the groups they see."""

    user_id: int
    username: str
    role: Role
    groups: frozenset[str] = frozenset()

    @property
    def limited(self) -> bool:
        """Whether individual data is limited to `groups`."""
        return self.role in GROUP_LIMITED


class Forbidden(Exception):
    """The principal may not do this: answered 403."""


def allowed(principal: Principal, permission: Permission, *, group: str | None = None) -> bool:
    """Whether the principal holds `permission` (for this group, when the role is limited)."""
    if permission not in ROLE_PERMISSIONS[principal.role]:
        return False
    return not (principal.limited and group is not None and group not in principal.groups)


def require(principal: Principal, permission: Permission, *, group: str | None = None) -> None:
    """Raise Forbidden unless the principal holds `permission` (for `group`, when given)."""
    if not allowed(principal, permission, group=group):
        raise Forbidden(f"{principal.role} may not {permission}")


def require_item(principal: Principal, permission: Permission, group: str | None) -> None:
    """Like require() for one individual's item, whose group may be None: a limited role is
    refused an item outside its groups, and an item without a group."""
    require(principal, permission)
    if principal.limited and (group is None or group not in principal.groups):
        raise Forbidden(f"{principal.username} does not see group {group!r}")
