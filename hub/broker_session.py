"""Short-lived broker connections of the hub's own, for the command line and the dashboard:
publish retained messages and know that the broker holds them.

Each uses its own client id (`<client_id>-<name>`) and the hub's CLI login, never the running
hub's session, which the broker would otherwise take over. Success means every message was
acknowledged: disconnecting before the PUBACKs arrive could lose some and still say "done".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from common.errors import HedgerowError
from common.wire import topics
from hub.config import HubConfig
from hub.enroll.broker import cli_user
from hub.enroll.settings import load_enroll_settings
from hub.errors import HubError
from hub.mqtt import MqttConnection

CONNECT_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 30.0  # for the broker to acknowledge every retained message
REVOKE_TIMEOUT_S = 10.0  # each of connecting and the acknowledgement, when revoking


@contextmanager
def hub_session(
    config: HubConfig, name: str, timeout_s: float = CONNECT_TIMEOUT_S
) -> Iterator[MqttConnection]:
    """A connected session; HubError if the broker cannot be reached within timeout_s."""
    user = cli_user(load_enroll_settings(config).hub_user) if config.mqtt.username else None
    connection = MqttConnection(
        config.mqtt, client_id=f"{config.mqtt.client_id}-{name}", username=user
    )
    connection.start()
    try:
        if not connection.wait_ready(timeout_s):
            raise HubError(f"cannot reach the broker at {config.mqtt.url}")
        yield connection
    finally:
        connection.stop()


def require_acked(
    connection: MqttConnection, count: int, url: str, timeout_s: float | None = None
) -> None:
    """Wait for the broker to acknowledge what was published; HubError naming what it did not
    take (refused, or not acknowledged within timeout_s, default ACK_TIMEOUT_S)."""
    timeout_s = ACK_TIMEOUT_S if timeout_s is None else timeout_s
    unacked, refused = connection.wait_acked(timeout_s)
    if not unacked and not refused:
        return
    problems = [f"{topic}: refused ({reason})" for topic, reason in refused]
    problems += [f"{topic}: not acknowledged within {timeout_s:.0f} s" for topic in unacked]
    shown = "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    raise HubError(
        f"only {count - len(problems)} of {count} retained messages reached the broker at "
        f"{url}: {shown}"
    )


def clear_device_policy(
    config: HubConfig, site: str, device: str, timeout_s: float | None = None
) -> str | None:
    """Remove a revoked device's retained policy from the broker at once (an empty retained
    message), rather than at the next publish. None when done, else why not: the revocation
    stands either way, and the next `hedgerow-hub policy publish` or hub start clears it."""
    timeout_s = REVOKE_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        with hub_session(config, "revoke", timeout_s) as connection:
            connection.publish(topics.device_policy(site, device), b"", True)
            require_acked(connection, 1, config.mqtt.url, timeout_s)
    except HedgerowError as exc:
        return str(exc)
    return None
