"""The root exception of the agent package; every error raised on purpose derives from it."""


class HedgerowError(Exception):
    """Base class for errors raised by Hedgerow's agent-side code and the shared wire format."""


class ConfigError(HedgerowError):
    """A configuration file is invalid; the message names the section, key, value and rule."""
