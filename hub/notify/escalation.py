"""The escalation chain: a severe alert is told to one contact at a time until a person acts.

We have no human moderators behind the hub, so the chain and the alert's trail carry that
role. On an alert at or above [escalation] min_severity the outbox tells the first contact of
the chain in force (school hours or out of hours) at once and starts a row in `escalations`.
The sender's loop then calls step_due(): when nobody has acted on the alert (any trail row by
a person: acknowledged, assigned, note, closed...) within the ack time, the next contact not
yet told is told, and the hub adds a trail row saying so. When everyone has been told, the
trail says that too. The state is in the database, so a restart carries on where it was, and
each step is claimed with an UPDATE ... RETURNING so two hub processes never both take it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from hub.alerts import HUB_ACTOR, AlertError, actions, get_alert, record_hub_action
from hub.model import Alert
from hub.notify.queue import queue_at_once
from hub.notify.settings import EscalationSettings, NotifySettings
from hub.store import Database, Row

log = logging.getLogger(__name__)

BATCH = 100
WAITING = "waiting"
ANSWERED = "answered"  # a person acted on the alert
EXHAUSTED = "exhausted"  # everyone in the chain was told and nobody acted
ENDED = "ended"  # the alert was closed (by a person or the hub) or purged
TOLD_DSL = "told the DSL"  # the hub's trail row after a person escalated to the DSL


@dataclass(frozen=True, slots=True)
class Escalation:
    """One alert's place in the chain."""

    alert_id: int
    started_ms: int
    step: int  # how many contacts have been told
    told: tuple[str, ...]
    due_ms: int
    status: str


def _row(row: Row) -> Escalation:
    return Escalation(
        int(row[0]),
        int(row[1]),
        int(row[2]),
        tuple(str(t) for t in json.loads(row[3])),
        int(row[4]),
        str(row[5]),
    )


_COLUMNS = "alert_id, started_ms, step, told, due_ms, status"


def get_escalation(db: Database, alert_id: int) -> Escalation | None:
    """The chain's state for one alert (None if the chain never followed it)."""
    rows = db.execute(f"SELECT {_COLUMNS} FROM escalations WHERE alert_id = ?", (alert_id,))
    return _row(rows[0]) if rows else None


def follows(settings: NotifySettings, alert: Alert) -> bool:
    """True if the chain, not each contact's min_severity, decides who hears of this alert."""
    esc = settings.escalation
    return esc is not None and alert.severity >= esc.min_severity


def _tell(db: Database, settings: NotifySettings, alert_id: int, contact_id: str, now: int) -> int:
    contact = settings.contact(contact_id)
    if contact is None:  # hub.toml was validated: only a reload in between can get here
        log.error("escalation of alert %d: contact %r is gone from hub.toml", alert_id, contact_id)
        return 0
    return queue_at_once(db, alert_id, contact, now)


def start(db: Database, settings: NotifySettings, alert: Alert, now: int) -> int:
    """Called by the outbox for a new or escalated alert the chain follows, in the caller's
    transaction; returns the notification rows queued."""
    esc = settings.escalation
    assert esc is not None
    state = get_escalation(db, alert.id)
    if state is not None and not (state.status != WAITING and _reopened(db, alert)):
        # Still waiting, or already answered: those told hear of the higher severity.
        return sum(_tell(db, settings, alert.id, c, now) for c in state.told)
    name, chain = esc.chain_at(now)
    first = chain[0]
    queued = _tell(db, settings, alert.id, first, now)
    told = json.dumps([first])
    if state is None:
        db.execute(
            f"INSERT INTO escalations ({_COLUMNS}) VALUES (?, ?, 1, ?, ?, ?)",
            (alert.id, now, told, now + esc.ack_ms, WAITING),
        )
    else:  # closed, then reopened at a higher severity: the chain starts again
        db.execute(
            "UPDATE escalations SET started_ms = ?, step = 1, told = ?, due_ms = ?, status = ? "
            "WHERE alert_id = ?",
            (now, told, now + esc.ack_ms, WAITING, alert.id),
        )
    record_hub_action(
        db,
        alert.id,
        now,
        "notified",
        f"{first} told at once ({name} chain: {', '.join(chain)}; the next is told if "
        f"nobody acts within {esc.waited})",
    )
    return queued


def tell_dsl(db: Database, settings: NotifySettings, alert: Alert, by: str, now: int) -> int:
    """A person escalated the alert to the DSL (the dashboard's "Escalate to the DSL"): tell
    the first contact of the chain in force (the DSL) at once by every channel, or, without an
    [escalation] chain, every contact told of severity 5 alerts of the alert's site; in the
    caller's transaction, with a hub trail row saying who was told. Returns the rows queued."""
    esc = settings.escalation
    if esc is not None:
        name, chain = esc.chain_at(now)
        targets = [chain[0]]
        source = f"the first of the {name} chain"
    else:
        targets = [c.id for c in settings.contacts if c.wants(alert.site, 5)]
        source = "no [escalation] chain: every contact told of severity 5"
    queued = sum(_tell(db, settings, alert.id, target, now) for target in targets)
    if targets:
        note = f"{', '.join(targets)} told at once: escalated to the DSL by {by} ({source})"
    else:
        note = "nobody could be told: no [escalation] chain and no contact takes severity 5"
        log.warning("alert %d escalated to the DSL by %s: %s", alert.id, by, note)
    record_hub_action(db, alert.id, now, TOLD_DSL, note)
    return queued


def escalated_by(db: Database, alert_id: int) -> str | None:
    """Who escalated the alert to the DSL, when the hub's latest trail row is telling the DSL
    of it (the email then says so); else None."""
    person = None
    latest_hub = None
    for _at, actor, action, _note in actions(db, alert_id):
        if actor == HUB_ACTOR:
            latest_hub = action
        elif action == "escalated to the DSL":
            person = actor
    return person if latest_hub == TOLD_DSL else None


def _reopened(db: Database, alert: Alert) -> bool:
    """True if the alert's latest trail row is the hub reopening it (closed, then worse)."""
    trail = actions(db, alert.id)
    return alert.status == "open" and bool(trail) and trail[-1][1:3] == (HUB_ACTOR, "reopened")


def _answered(db: Database, alert_id: int, since_ms: int) -> str | None:
    """Who acted on the alert since the chain started (None: nobody)."""
    for at_ms, actor, _action, _note in actions(db, alert_id):
        if actor != HUB_ACTOR and at_ms >= since_ms:
            return actor
    return None


def step_due(db: Database, settings: NotifySettings, now: int) -> int:
    """Move every chain whose wait is over one step on, each in its own transaction; returns
    how many contacts were told."""
    esc = settings.escalation
    if esc is None:
        return 0
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM escalations WHERE status = ? AND due_ms <= ? "
        f"ORDER BY due_ms LIMIT {BATCH}",
        (WAITING, now),
    )
    told = 0
    for row in rows:
        with db.transaction():
            told += _step(db, settings, esc, _row(row), now)
    return told


def _claim(
    db: Database,
    state: Escalation,
    due_ms: int,
    *,
    status: str = WAITING,
    told: tuple[str, ...] | None = None,
) -> bool:
    """Set the chain's new state unless another hub process moved it first."""
    told = state.told if told is None else told
    claimed = db.execute(
        "UPDATE escalations SET step = ?, told = ?, due_ms = ?, status = ? "
        "WHERE alert_id = ? AND step = ? AND status = ? RETURNING alert_id",
        (len(told), json.dumps(list(told)), due_ms, status, state.alert_id, state.step, WAITING),
    )
    return bool(claimed)


def _step(
    db: Database, settings: NotifySettings, esc: EscalationSettings, state: Escalation, now: int
) -> int:
    try:
        alert = get_alert(db, state.alert_id)
    except AlertError:
        _claim(db, state, now, status=ENDED)  # purged by retention
        return 0
    if alert.status == "closed":
        _claim(db, state, now, status=ENDED)
        return 0
    actor = _answered(db, alert.id, state.started_ms)
    if actor is not None:
        if _claim(db, state, now, status=ANSWERED):
            log.info("alert %d: %s acted on it; the chain stops", alert.id, actor)
        return 0
    name, chain = esc.chain_at(now)
    waited = f"not acknowledged in {esc.waited}"
    following = next((c for c in chain if c not in state.told), None)
    if following is None:
        if _claim(db, state, now, status=EXHAUSTED):
            record_hub_action(
                db,
                alert.id,
                now,
                "escalation exhausted",
                f"{waited} by anyone in the chain: {', '.join(state.told)} were told",
            )
            log.warning(
                "alert %d (severity %d): nobody in the escalation chain acted (%s told)",
                alert.id, alert.severity, ", ".join(state.told),
            )  # fmt: skip
        return 0
    told = (*state.told, following)
    if not _claim(db, state, now + esc.ack_ms, told=told):
        return 0  # another hub process took this step
    _tell(db, settings, alert.id, following, now)
    note = waited + (f" ({name} chain)" if name != "school hours" else "")
    record_hub_action(db, alert.id, now, f"escalated to {following}", note)
    log.warning("alert %d escalated to %s: %s", alert.id, following, waited)
    return 1


def told_before(db: Database, alert_id: int, contact_id: str) -> tuple[str, ...]:
    """The contacts the chain told before this one, when it tells them because nobody acted
    (empty for the first contact, or one the chain did not tell)."""
    state = get_escalation(db, alert_id)
    if state is None or contact_id not in state.told:
        return ()
    return state.told[: state.told.index(contact_id)]
