"""The arguments of `hedgerow-dns enroll` and `hedgerow-agent enroll`, apart from the
enrolment itself (agent/enrolment_client.py), so that building a command line does not load
the enrolment client: `hedgerow-agent run` never enrols, and runs all day on every laptop."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.identity import DEVICE_CLASSES


def add_enroll_arguments(parser: argparse.ArgumentParser, default_class: str | None) -> None:
    """The arguments of `hedgerow-dns enroll` / `hedgerow-agent enroll` (see enroll_from_args)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--token", help="the technician's token, HW1-XXXX-...")
    source.add_argument("--bundle", type=Path, help="an offline bundle from the hub (0600)")
    parser.add_argument("--site", help="site id, e.g. cape-primary (with --token)")
    parser.add_argument("--broker", help="broker URL, e.g. mqtts://hub.school:8883 (with --token)")
    parser.add_argument("--ca", default=None, help="CA certificate of the broker (mqtts)")
    parser.add_argument(
        "--class",
        dest="device_class",
        choices=DEVICE_CLASSES,
        default=default_class,
        help="device class (optional: the token fixes it; given, it must match the token)",
    )
    parser.add_argument(
        "--group",
        default=None,
        help="filtering group (optional: the token or the site's default decides; given, it "
        "must match)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the hub")
