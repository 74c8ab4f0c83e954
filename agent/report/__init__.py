"""Reports from edge devices to the hub: seal, spool durably, publish over MQTT in order.

Shared by hedgerow-dns (the Pi filter) and hedgerow-agent (the laptop agent). Only
`agent.report.mqtt` imports paho-mqtt.
"""

from agent.report.errors import LinkError, ReportError, SpoolError
from agent.report.publisher import Publisher, PublisherStats
from agent.report.spool import Spool, SpoolStats

__all__ = [
    "LinkError",
    "Publisher",
    "PublisherStats",
    "ReportError",
    "Spool",
    "SpoolError",
    "SpoolStats",
]
