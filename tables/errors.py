"""One exception root for Weir; every error the project raises derives from it."""


class WeirError(Exception):
    """Root of every error Weir raises on purpose."""


class ConfigError(WeirError):
    """A setting has an invalid value; the message names the setting and its unit."""


class DecodeError(WeirError):
    """An input event cannot be decoded; the message is the dead-letter reason."""
