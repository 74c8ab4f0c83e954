"""Errors raised by the report pipeline; all derive from HedgerowError."""

from __future__ import annotations

from common.errors import HedgerowError


class ReportError(HedgerowError):
    """Something in the report pipeline (spool, broker link, publisher) failed."""


class LinkError(ReportError):
    """The broker link cannot be set up or used (bad URL, TLS files, paho refusing a call)."""


class SpoolError(ReportError):
    """The spool directory cannot be used at all (not creatable, not a directory)."""
