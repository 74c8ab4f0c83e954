"""hedgerow-agent: the command line of the laptop agent.

Today it enrols a laptop with the hub and shows its identity; the agent daemon arrives with
the laptop agent issue (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.enrolment_client import add_enroll_arguments, enroll_from_args
from common.cli_runner import run
from common.identity import Identity

DEFAULT_IDENTITY = Path("/var/lib/hedgerow/agent")


def cmd_show(args: argparse.Namespace) -> int:
    """Print who this device is enrolled as (no secrets)."""
    identity = Identity.load(args.identity)
    info = {
        "site": identity.site,
        "device": identity.device,
        "class": identity.device_class,
        "group": identity.group,
        "device_key": identity.key.verify_key.key_id.hex(),
        "hub_key": identity.hub_key.key_id.hex(),
        "broker": identity.mqtt.url,
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enrol this laptop with the hub (token over MQTT, or an offline bundle)."""
    identity = enroll_from_args(args, args.identity)
    print(f"enrolled as {identity.site}/{identity.device} ({identity.device_class})")
    print(f"identity written to {args.identity}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="hedgerow-agent",
        description="Hedgerow laptop agent: proves whether a school laptop is on site, keeps "
        "the school's filtering when it is not, and reports sealed activity summaries.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", help="show this device's enrolled identity (no secrets)")
    show.add_argument("--identity", type=Path, default=DEFAULT_IDENTITY, help="identity directory")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    enroll = sub.add_parser("enroll", help="enrol this laptop with the hub (token or bundle)")
    enroll.add_argument(
        "--identity", type=Path, default=DEFAULT_IDENTITY, help="identity directory"
    )
    add_enroll_arguments(enroll, default_class=None)
    enroll.set_defaults(func=cmd_enroll)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the hedgerow-agent console script."""
    return run("hedgerow-agent", build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
