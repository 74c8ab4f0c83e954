"""The sniffer child: `python -m agent.laptop.sniffer.child [--interface IF]` captures DNS, DoT
and DoQ packets and writes each flow's packets, at most one per `--flow-interval-s`, as JSON
lines (Observed.to_line) on stdout; first it writes STARTED_LINE once capturing.

Exit codes: 0 stopped, 3 libpcap not found, 4 not permitted (no CAP_NET_RAW), 5 no such
interface, 1 anything else. The parent (supervisor.py) reads them."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from agent.laptop.sniffer.errors import NoInterface, NoLibpcap
from agent.laptop.sniffer.flows import FLOW_INTERVAL_S, FlowLimiter
from agent.laptop.sniffer.observed import STARTED_LINE, Observed

log = logging.getLogger(__name__)

EXIT_NO_LIBPCAP = 3
EXIT_NOT_PERMITTED = 4
EXIT_NO_INTERFACE = 5


def _write(line: str) -> None:
    """One line on stdout, now: the parent reads as we go."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Capture until stopped; the exit code says why it stopped."""
    parser = argparse.ArgumentParser(prog="python -m agent.laptop.sniffer.child")
    parser.add_argument("--interface", default=None, help="one interface (default: all)")
    parser.add_argument("--flow-interval-s", type=float, default=FLOW_INTERVAL_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="sniffer child: %(message)s")
    limiter = FlowLimiter(time.monotonic, interval_s=args.flow_interval_s)

    def on_observed(obs: Observed) -> None:
        if limiter.admit(obs):
            _write(obs.to_line())

    try:
        # Imported here, so that a missing libpcap is an exit code, not a traceback.
        from agent.laptop.sniffer.capture import capture

        capture(args.interface, on_observed, lambda: _write(STARTED_LINE))
    except BrokenPipeError:
        return 0  # the parent went away
    except KeyboardInterrupt:
        return 0
    except PermissionError as exc:
        log.error("not permitted: %s", exc)
        return EXIT_NOT_PERMITTED
    except NoLibpcap as exc:
        log.error("libpcap not found: %s", exc)
        return EXIT_NO_LIBPCAP
    except NoInterface as exc:
        log.error("no such interface: %s", exc)
        return EXIT_NO_INTERFACE
    except OSError as exc:
        # scapy loads libpcap at import; without it the import fails with this
        if "pcap" in str(exc):
            log.error("libpcap not found: %s", exc)
            return EXIT_NO_LIBPCAP
        log.error("capture failed: %s", exc)
        return 1
    except Exception:
        log.exception("capture failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
