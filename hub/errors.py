"""The root exception of the hub package."""

from common.errors import ConfigError, HedgerowError


class HubError(HedgerowError):
    """Base class for errors raised on purpose by hedgerow-hub."""


class StoreError(HubError):
    """The database could not be opened, migrated or written."""


__all__ = ["ConfigError", "HubError", "StoreError"]
