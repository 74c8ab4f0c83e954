"""enroll: make this Pi a `sinkhole` device of the hub, writing [report] identity."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import ConfigError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], *, arguments: bool = True
) -> None:
    """Add enroll to the hedgerow-dns parser; its arguments only if `arguments` (the CLI
    asks for them only when enroll is the command: agent.enrolment_client brings cryptography and paho,
    about 13 MB resident, which `serve` should not carry)."""
    p = sub.add_parser(
        "enroll",
        help="enrol with the hub as class sinkhole (token over MQTT, or an offline bundle)",
        description="Generates this filter's device key and site beacon key, registers them "
        "with the hub, and writes them with the hub's keys and MQTT credentials under "
        "[report] identity.",
    )
    p.set_defaults(func=cmd_enroll)
    if not arguments:
        return
    from agent.enroll_args import add_enroll_arguments

    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    add_enroll_arguments(p, default_class="sinkhole")


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enrol and report where the identity went."""
    from agent.dns.config import load_config
    from agent.enrolment_client import enroll_from_args

    config = load_config(args.config)
    if config.report is None:
        raise ConfigError(f"{args.config}: [report] identity is needed to know where to enrol to")
    if args.device_class != "sinkhole":
        raise ConfigError("hedgerow-dns enrols only as class sinkhole")
    identity = enroll_from_args(args, config.report.identity)
    print(f"enrolled as {identity.site}/{identity.device} (sinkhole)")
    print(f"identity written to {config.report.identity}")
    if identity.beacon_key is None:
        print("warning: no beacon key was issued; laptops cannot prove they are on site")
    return 0
