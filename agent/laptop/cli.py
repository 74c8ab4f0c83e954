"""hedgerow-agent: the command line of the laptop agent (docs/agent.md)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.enroll_args import add_enroll_arguments
from agent.laptop.config import AgentConfig, load_config
from agent.laptop.control import ControlError, ask
from agent.laptop.status import read_status_file, render
from common.cli_runner import run
from common.identity import Identity, IdentityError

DEFAULT_CONFIG = Path("/etc/hedgerow/agent.toml")


def _config(args: argparse.Namespace) -> AgentConfig:
    return load_config(args.config)


def _identity_dir(args: argparse.Namespace) -> Path:
    """--identity if given, else the config's state directory."""
    return Path(args.identity) if args.identity is not None else _config(args).identity_dir


def cmd_show(args: argparse.Namespace) -> int:
    """Print who this device is enrolled as (no secrets)."""
    identity = Identity.load(_identity_dir(args))
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
    if args.identity is None:
        config = _config(args)
        if args.broker is None and config.hub_url is not None:
            args.broker = config.hub_url
    from agent.enrolment_client import enroll_from_args

    directory = _identity_dir(args)
    identity = enroll_from_args(args, directory)
    print(f"enrolled as {identity.site}/{identity.device} ({identity.device_class})")
    print(f"identity written to {directory}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The service: filter, prove where we are, report."""
    config = _config(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from agent.laptop import caps
    from common import heap

    heap.limit_arenas()  # before the service starts its threads
    heap.fix_mmap_threshold()  # before a policy's lists are parsed (common/heap.py)
    caps.drop_net_raw_effective()  # likewise: capabilities are per thread
    from agent.laptop.service import run_service

    try:
        return asyncio.run(run_service(config))
    except IdentityError as exc:
        print(f"hedgerow-agent: not enrolled ({exc}): run hedgerow-agent enroll", file=sys.stderr)
        return 1


def cmd_status(args: argparse.Namespace) -> int:
    """Where the laptop is, what the filter does, what waits to be sent."""
    config = _config(args)
    try:
        status = ask(config.control_socket, {"op": "status"}, timeout=5)["status"]
    except ControlError as exc:
        last = read_status_file(config.status_file)
        if last is None:
            print(
                f"hedgerow-agent status: {exc}; no status file at {config.status_file}",
                file=sys.stderr,
            )
            return 1
        status = {**last, "running": False}
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print(render(status))
    return 0 if status.get("running", False) else 3


def cmd_check(args: argparse.Namespace) -> int:
    """Check the config, the enrolment and the kept policy; exit 0 or 1 (for ExecStartPre=)."""
    config = _config(args)
    problems = []
    try:
        identity = Identity.load(config.identity_dir)
    except IdentityError as exc:
        problems.append(f"not enrolled: {exc} (run hedgerow-agent enroll)")
        identity = None
    if identity is not None:
        from agent.laptop.policy_spec import read_policy
        from agent.policy_client import current_policy

        try:
            message = current_policy(config.identity_dir, "device")
            if message is None:
                print(
                    "hedgerow-agent check: no policy yet: filtering with the defaults until the hub sends one",
                    file=sys.stderr,
                )
            else:
                read_policy(message.version, message.payload.get("document"))
        except Exception as exc:  # PolicyError, OpenError, a damaged file: all the same here
            problems.append(f"the kept policy cannot be used: {exc}")
    for problem in problems:
        print(f"hedgerow-agent check: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{config.path}: ok")
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    """Send the current window's summary now and wait until the hub has receipted everything."""
    config = _config(args)
    reply = ask(
        config.control_socket, {"op": "flush", "timeout": args.timeout}, timeout=args.timeout + 5
    )
    if reply.get("receipted"):
        print("flushed: everything is receipted by the hub")
        return 0
    print(
        f"not yet receipted: {reply.get('spool_depth')} reports still in the spool", file=sys.stderr
    )
    return 1


def cmd_report_concern(args: argparse.Namespace) -> int:
    """Report something upsetting or unsuitable seen on this laptop to the school's DSL."""
    config = _config(args)
    text = " ".join(args.text) if args.text else ""
    if not text and sys.stdin.isatty():
        print("What did you see? (one line; Enter to send)")
        text = sys.stdin.readline().strip()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    request = {"op": "concern", "text": text, "user": user}
    try:
        ask(config.control_socket, request, timeout=10)
    except ControlError as exc:
        if not _send_concern_directly(config, text, user):
            raise ControlError(f"{exc}; ask a teacher to report it instead") from exc
    print("Thank you. Your concern has been sent to the school's safeguarding lead.")
    return 0


def _send_concern_directly(config: AgentConfig, text: str, user: str) -> bool:
    """With the agent not running: seal and spool the concern ourselves, if this user may read
    the device's keys (root, or the technician), and try to send it for a few seconds; the
    agent sends whatever is still spooled when it next runs. False if the keys are not ours."""
    import time

    from agent.report import Publisher
    from common.wire.header import Kind

    try:
        Identity.load(config.identity_dir)
    except (IdentityError, OSError):
        return False
    heartbeat = {"v": 1, "uptime_s": 0, "policy_version": 0, "software": "hedgerow-agent"}
    publisher = Publisher.open(
        config.identity_dir,
        config.spool_dir,
        lambda: heartbeat,
        broker_url=config.hub_url,
        max_spool_bytes=config.report.max_spool_mb * 1024 * 1024,
    )
    detail = {"text": text[:1024], **({"user": user[:255]} if user else {})}
    event = {"v": 1, "type": "concern", "at": int(time.time() * 1000), "detail": detail}
    publisher.start()
    try:
        publisher.offer(Kind.EVENT, event, urgent=True)
        if not publisher.drain(10):
            print("(no connection to the hub now: it is kept and sent later)", file=sys.stderr)
    finally:
        publisher.stop(timeout=2)
    return True


def cmd_uninstall(args: argparse.Namespace) -> int:
    """Undo everything the agent did to this laptop's DNS settings (stop `run` first); with
    --purge also delete the state directory (identity, spool, policy)."""
    config = _config(args)
    try:
        ask(config.control_socket, {"op": "status"}, timeout=3)
    except ControlError:
        pass
    else:
        print("hedgerow-agent uninstall: the agent is running: stop it first", file=sys.stderr)
        return 1
    from agent.laptop.resolver.choose import choose

    resolver = choose(config.state_dir / "resolver", resolv_conf=config.filter.resolv_conf)
    found = resolver.cleanup_leftovers()
    resolver.restore()
    print(f"DNS settings ({resolver.name}): " + ("restored" if found else "nothing to undo"))
    for path in (config.control_socket, config.status_file):
        path.unlink(missing_ok=True)
    if args.purge:
        import shutil

        spool = config.spool_dir
        waiting = len(list(spool.glob("*.env"))) if spool.is_dir() else 0
        if waiting and not args.force:
            print(
                f"hedgerow-agent uninstall: {waiting} reports are not yet receipted by the hub "
                "(run `hedgerow-agent flush` while the agent runs, or add --force to lose them)",
                file=sys.stderr,
            )
            return 1
        shutil.rmtree(config.state_dir, ignore_errors=True)
        print(f"removed {config.state_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="hedgerow-agent",
        description="Hedgerow laptop agent: proves whether a school laptop is on site, keeps "
        "the school's filtering when it is not, and reports sealed activity summaries.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        one = sub.add_parser(name, help=help_text, description=help_text)
        one.add_argument(
            "--config",
            type=Path,
            default=DEFAULT_CONFIG,
            help=f"config file (default {DEFAULT_CONFIG})",
        )
        return one

    enroll = command("enroll", "enrol this laptop with the hub (token or bundle)")
    enroll.add_argument(
        "--identity", type=Path, help="identity directory (default: the config's state_dir)"
    )
    add_enroll_arguments(enroll, default_class=None)
    enroll.set_defaults(func=cmd_enroll)
    command("run", "run the agent (the service)").set_defaults(func=cmd_run)
    status = command("status", "show where the laptop is and what the agent is doing")
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.set_defaults(func=cmd_status)
    command("check", "check config, enrolment and policy (exit 0 or 1)").set_defaults(
        func=cmd_check
    )
    flush = command("flush", "send the current summary now; wait for the hub's receipt")
    flush.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    flush.set_defaults(func=cmd_flush)
    concern = command(
        "report-concern", "report something upsetting or unsuitable seen on this laptop"
    )
    concern.add_argument("text", nargs="*", help="what was seen (asked for if not given)")
    concern.set_defaults(func=cmd_report_concern)
    uninstall = command("uninstall", "undo the agent's DNS settings (and with --purge its state)")
    uninstall.add_argument("--purge", action="store_true", help="also delete the state directory")
    uninstall.add_argument(
        "--force", action="store_true", help="with --purge: even if reports wait"
    )
    uninstall.set_defaults(func=cmd_uninstall)
    show = command("show", "show this device's enrolled identity (no secrets)")
    show.add_argument(
        "--identity", type=Path, help="identity directory (default: the config's state_dir)"
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the hedgerow-agent console script."""
    return run("hedgerow-agent", build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
