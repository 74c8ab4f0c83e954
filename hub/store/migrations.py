"""Versioned schema migrations, shared by SQLite and PostgreSQL.

Each migration is a list of statements with dialect placeholders: {id} for an auto-numbered
primary key, {blob} for binary columns and {client_group} for a report body's `client.group`
(read from `body`). Append new migrations; never edit one
that has shipped.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: the whole hub schema as first designed (foundation, hub issues).
    [
        """CREATE TABLE sites (
            site TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_ms BIGINT NOT NULL)""",
        """CREATE TABLE devices (
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            class TEXT NOT NULL,
            grp TEXT,
            verify_key {blob} NOT NULL,
            beacon_key {blob},
            hostname TEXT,
            mqtt_user TEXT,
            mqtt_secret_hash TEXT,
            counts_only INTEGER NOT NULL DEFAULT 0,
            enrolled_ms BIGINT NOT NULL,
            revoked_ms BIGINT,
            last_seen_ms BIGINT,
            last_seq BIGINT NOT NULL DEFAULT 0,
            policy_version BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (site, device))""",
        """CREATE TABLE enroll_tokens (
            token_hash TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            class TEXT NOT NULL,
            grp TEXT,
            uses_left INTEGER NOT NULL,
            expires_ms BIGINT NOT NULL,
            created_ms BIGINT NOT NULL)""",
        # Every accepted envelope, decrypted. (site, device, seq) makes redelivery harmless.
        """CREATE TABLE reports (
            id {id},
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            seq BIGINT NOT NULL,
            kind TEXT NOT NULL,
            digest {blob} NOT NULL,
            time_ms BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            client_ip TEXT,
            client_user TEXT,
            body TEXT NOT NULL,
            UNIQUE (site, device, seq))""",
        "CREATE INDEX reports_received ON reports (received_ms)",
        "CREATE INDEX reports_device ON reports (site, device, time_ms)",
        # DfE log fields, queryable: what was blocked, for whom, when.
        """CREATE TABLE blocked (
            report_id BIGINT NOT NULL,
            name TEXT NOT NULL,
            category TEXT NOT NULL,
            count INTEGER NOT NULL)""",
        "CREATE INDEX blocked_report ON blocked (report_id)",
        # Blocked attempts per report and category (the larger of a summary's `blocked` and
        # `categories` counts), so a rule's sliding window is one indexed range scan instead of
        # re-reading every report body in the window.
        """CREATE TABLE attempts (
            report_id BIGINT NOT NULL,
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            client_ip TEXT,
            category TEXT NOT NULL,
            count INTEGER NOT NULL,
            time_ms BIGINT NOT NULL)""",
        "CREATE INDEX attempts_window ON attempts (site, device, category, time_ms)",
        "CREATE INDEX attempts_report ON attempts (report_id)",
        """CREATE TABLE alerts (
            id {id},
            rule TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            severity INTEGER NOT NULL,
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            device_class TEXT,
            grp TEXT,
            status TEXT NOT NULL,
            first_seen_ms BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL,
            count INTEGER NOT NULL,
            summary TEXT NOT NULL,
            evidence TEXT NOT NULL,
            notified_severity INTEGER NOT NULL DEFAULT 0)""",
        """CREATE UNIQUE INDEX alerts_open ON alerts (site, device, rule, dedup_key)
            WHERE status = 'open'""",
        # Rules look up a key's latest alert in any status (cooldown, acknowledged conditions).
        "CREATE INDEX alerts_key ON alerts (site, device, rule, dedup_key)",
        # Ticks list a rule's open and acknowledged alerts (silent devices, stale policies).
        "CREATE INDEX alerts_rule ON alerts (rule, status)",
        """CREATE TABLE alert_actions (
            id {id},
            alert_id BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            note TEXT)""",
        "CREATE INDEX alert_actions_alert ON alert_actions (alert_id)",
        """CREATE TABLE rejections (
            id {id},
            at_ms BIGINT NOT NULL,
            reason TEXT NOT NULL,
            topic TEXT,
            site TEXT,
            device TEXT,
            size INTEGER NOT NULL,
            detail TEXT)""",
        # The security rule counts recent refusals on every refusal: without these a flood of
        # forged envelopes would make each check a scan of the whole table.
        "CREATE INDEX rejections_at ON rejections (at_ms)",
        "CREATE INDEX rejections_device ON rejections (site, device, at_ms)",
        # Agents' last wills (heartbeats with clean_stop false) waiting out their grace period:
        # a broker restart publishes every connected agent's will, and the agents reconnect.
        """CREATE TABLE last_wills (
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            report_id BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (site, device))""",
        """CREATE TABLE policies (
            id {id},
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            version BIGINT NOT NULL,
            body TEXT NOT NULL,
            signed {blob} NOT NULL,
            created_ms BIGINT NOT NULL,
            UNIQUE (site, device, version))""",
        # Outbox: a notification is a row first, so a failed send is retried, never lost.
        """CREATE TABLE notifications (
            id {id},
            alert_id BIGINT NOT NULL,
            channel TEXT NOT NULL,
            contact TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms BIGINT NOT NULL,
            last_error TEXT,
            created_ms BIGINT NOT NULL,
            sent_ms BIGINT)""",
    ],
    # 2: hub, broker and enrolment hardening (issue 10).
    [
        # -- enrolment tokens: ids, per-token broker logins, revocation --
        # A token's public id (enroll-token list/revoke), the Mosquitto hash of its broker
        # login's password (the login is enroll-<token_id>), and when it was revoked.
        "ALTER TABLE enroll_tokens ADD COLUMN token_id TEXT",
        "ALTER TABLE enroll_tokens ADD COLUMN login_hash TEXT",
        "ALTER TABLE enroll_tokens ADD COLUMN revoked_ms BIGINT",
        "CREATE UNIQUE INDEX enroll_tokens_id ON enroll_tokens (token_id)",
        # -- ingest: rejection counts per minute, envelopes held until they can be opened --
        # Refusals counted per (site, device, reason, minute): a flood costs one row per minute,
        # not one per envelope ("" where the topic named no site or device).
        """CREATE TABLE rejection_counts (
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            reason TEXT NOT NULL,
            minute_ms BIGINT NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (site, device, reason, minute_ms))""",
        "CREATE INDEX rejection_counts_minute ON rejection_counts (minute_ms)",
        # rejections now keeps samples of what rejection_counts counts (sampled = 1); rows from
        # before (sampled = 0) still count one refusal each.
        "ALTER TABLE rejections ADD COLUMN sampled INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX rejections_unsampled ON rejections (at_ms) WHERE sampled = 0",
        # Authentic envelopes sealed to a hub key not loaded yet, opened once it is.
        """CREATE TABLE held_envelopes (
            id {id},
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            seq BIGINT NOT NULL,
            key_id {blob} NOT NULL,
            topic TEXT NOT NULL,
            envelope {blob} NOT NULL,
            size INTEGER NOT NULL,
            received_ms BIGINT NOT NULL,
            UNIQUE (site, device, seq))""",
        # Replay windows reset by the operator (hedgerow-hub devices reset-seq): the running
        # hubs read new rows to forget what they remember of the device.
        """CREATE TABLE seq_resets (
            id {id},
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            highest BIGINT NOT NULL,
            shift BIGINT NOT NULL)""",
        # -- delivery receipts --
        # How far each device's envelopes are processed without a gap (the `through` of its
        # signed receipt), so a restarted hub carries on from there (hub/receipts).
        """CREATE TABLE receipts (
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            through BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (site, device))""",
    ],
    # 3: blocked attempts grouped by device name (issue 11, "Know who asked").
    [
        # Who a DNS client's attempts belong to: its device name where the filter knew one
        # ("name:lt-042"), else its MAC ("mac:..."), else its address, so an address that
        # changes hands is two devices and a device that moves is one. NULL in rows written
        # before: those are read as their client_ip, the grouping they had.
        "ALTER TABLE attempts ADD COLUMN client_key TEXT",
        # The client's device name alone (NULL when none), so an event and the summary that
        # counts it again are matched on address and name, whatever ARP added to the MAC.
        "ALTER TABLE attempts ADD COLUMN client_name TEXT",
    ],
    # 4: the safeguarding dashboard's accounts, sessions and access log (issue 13).
    [
        # People who log in to the dashboard. group_list: a JSON list, the groups a dsl_limited
        # account may see. password_hash: an Argon2id PHC string.
        """CREATE TABLE web_users (
            id {id},
            username TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            group_list TEXT NOT NULL DEFAULT '[]',
            password_hash TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            password_ms BIGINT NOT NULL,
            disabled_ms BIGINT)""",
        # Logins, server side: only the SHA-256 of the cookie's random id is stored, so a copy
        # of the database opens no session. ended_ms: logout, or the account disabled.
        """CREATE TABLE web_sessions (
            id_hash TEXT PRIMARY KEY,
            user_id BIGINT NOT NULL,
            created_ms BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL,
            ended_ms BIGINT,
            client TEXT)""",
        "CREATE INDEX web_sessions_user ON web_sessions (user_id)",
        # GDPR accountability: who looked at which individual's alert, activity or concern.
        """CREATE TABLE access_log (
            id {id},
            at_ms BIGINT NOT NULL,
            username TEXT NOT NULL,
            role TEXT NOT NULL,
            what TEXT NOT NULL,
            item TEXT NOT NULL,
            via TEXT NOT NULL)""",
        "CREATE INDEX access_log_at ON access_log (at_ms)",
        "CREATE INDEX access_log_item ON access_log (what, item)",
    ],
    # 5: alert triage: assignee, outcomes, escalation to the DSL (issue 13).
    [
        # Who is dealing with the alert (a dashboard username), the outcome it was closed with
        # (hub.alert_triage.OUTCOMES), and when it was escalated to the DSL (NULL: not escalated):
        # escalated alerts head the queue.
        "ALTER TABLE alerts ADD COLUMN assignee TEXT",
        "ALTER TABLE alerts ADD COLUMN outcome TEXT",
        "ALTER TABLE alerts ADD COLUMN escalated_ms BIGINT",
        "CREATE INDEX alerts_assignee ON alerts (assignee, status)",
        # What a trail row set: the assignee of an "assigned" row, the outcome of a "closed" one.
        "ALTER TABLE alert_actions ADD COLUMN value TEXT",
    ],
    # 6: concern records, their amendments and sign-off (issue 13). Append-only: hub/concerns.py
    # has no UPDATE or DELETE of any of these, and retention never purges them.
    [
        # One row per concern: who opened it and the group that decides who may read it.
        """CREATE TABLE concerns (
            id {id},
            opened_ms BIGINT NOT NULL,
            opened_by TEXT NOT NULL,
            grp TEXT)""",
        # Every entry, in order: opened, amended (with its reason), signed-off (with a note).
        """CREATE TABLE concern_entries (
            id {id},
            concern_id BIGINT NOT NULL REFERENCES concerns (id),
            at_ms BIGINT NOT NULL,
            actor TEXT NOT NULL,
            role TEXT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT)""",
        "CREATE INDEX concern_entries_concern ON concern_entries (concern_id, id)",
        # The values an entry set; a field's current value is the one of its latest entry.
        """CREATE TABLE concern_fields (
            entry_id BIGINT NOT NULL REFERENCES concern_entries (id),
            concern_id BIGINT NOT NULL REFERENCES concerns (id),
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (entry_id, field))""",
        "CREATE INDEX concern_fields_lookup ON concern_fields (field, concern_id, entry_id)",
        # The alerts a concern was opened from, copied as they were: alerts are purged after
        # [retention] alerts_days, a concern record is kept.
        """CREATE TABLE concern_alerts (
            concern_id BIGINT NOT NULL REFERENCES concerns (id),
            alert_id BIGINT NOT NULL,
            rule TEXT NOT NULL,
            severity INTEGER NOT NULL,
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            grp TEXT,
            summary TEXT NOT NULL,
            first_seen_ms BIGINT NOT NULL,
            PRIMARY KEY (concern_id, alert_id))""",
        "CREATE INDEX concern_alerts_device ON concern_alerts (site, device)",
        "CREATE INDEX concern_alerts_alert ON concern_alerts (alert_id)",
    ],
    # 7: the checks register and the governors' review sign-offs (issue 13). Append-only:
    # hub/checks.py has no UPDATE or DELETE of either.
    [
        # One row per check: a `hedgerow-dns selftest` run or a manual check (SWGfL Test
        # Filtering and the like). result: "pass", "fail" or "partial".
        """CREATE TABLE checks (
            id {id},
            at_ms BIGINT NOT NULL,
            recorded_ms BIGINT NOT NULL,
            recorded_by TEXT NOT NULL,
            kind TEXT NOT NULL,
            what TEXT NOT NULL,
            result TEXT NOT NULL,
            passed INTEGER,
            failed INTEGER,
            action TEXT NOT NULL)""",
        "CREATE INDEX checks_at ON checks (at_ms)",
        # Who signed the annual review of an academic year (e.g. "2025-26") and when.
        """CREATE TABLE review_signoffs (
            id {id},
            year TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            username TEXT NOT NULL,
            role TEXT NOT NULL,
            signed_as TEXT NOT NULL,
            note TEXT NOT NULL)""",
        "CREATE INDEX review_signoffs_year ON review_signoffs (year, id)",
    ],
    # 8: the escalation chain's notification state (issue 13, hub/notify/escalation.py).
    [
        # One row per severe alert the chain follows. told: a JSON list of the contact ids
        # told so far, in order; due_ms: when the next one is told unless a person acts on the
        # alert first. status: waiting, answered (a person acted), exhausted (everyone told,
        # nobody acted) or ended (the alert was closed or purged).
        """CREATE TABLE escalations (
            alert_id BIGINT PRIMARY KEY,
            started_ms BIGINT NOT NULL,
            step INTEGER NOT NULL,
            told TEXT NOT NULL,
            due_ms BIGINT NOT NULL,
            status TEXT NOT NULL)""",
        "CREATE INDEX escalations_due ON escalations (status, due_ms)",
    ],
    # 9: blocked attempts by time alone, for the dashboard's filtering page and the annual
    # review, which sum a period over every device (attempts_window leads with the device).
    ["CREATE INDEX attempts_time ON attempts (time_ms)"],
    # 10: who decided each policy change (hedgerow-hub policy publish --by/--reason, or the hub
    # reading hub.toml at start), matched to the policies it signed by their created_ms.
    [
        """CREATE TABLE policy_decisions (
            id {id},
            at_ms BIGINT NOT NULL,
            decided_by TEXT NOT NULL,
            reason TEXT NOT NULL,
            how TEXT NOT NULL)""",
        "CREATE INDEX policy_decisions_at ON policy_decisions (at_ms)",
    ],
    # 11: the group of the client whose attempts they are (a DNS filter's `client.group`: one
    # filter reports every group of a school), stored at ingest instead of read out of each
    # report body whenever the dashboard or the annual review counts attempts per group.
    [
        "ALTER TABLE attempts ADD COLUMN client_group TEXT",
        "UPDATE attempts SET client_group = "
        "(SELECT {client_group} FROM reports WHERE reports.id = attempts.report_id)",
    ],
]
