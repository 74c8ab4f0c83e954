"""paho-mqtt's client module, imported without `urllib.request` (common/deferred.py says why).

The edge daemons import paho from here, never directly, so the deferral always comes first.
"""

from __future__ import annotations

from common.deferred import defer

defer("urllib.request")

import paho.mqtt.client as paho  # noqa: E402  (after the deferral, which is the point)

__all__ = ["paho"]
