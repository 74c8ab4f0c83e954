"""Ingest: broker messages through the opening pipeline into the store and the rules.

paho thread -> bounded queue -> IngestWorker (open, store, rules, commit) -> ack.
"""

from hub.ingest.hooks import EnrollHandler, Publish, ReportRules
from hub.ingest.worker import BatchLimits, IngestWorker

__all__ = ["BatchLimits", "EnrollHandler", "IngestWorker", "Publish", "ReportRules"]
