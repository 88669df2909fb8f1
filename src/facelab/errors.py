"""User-facing errors: each names the file, line or value at fault and how to fix it."""


class FacelabError(Exception):
    """Base class for errors caused by user input (bad files, options, data)."""


class DataError(FacelabError):
    """A dataset folder, annotation file or image is missing or malformed."""


class ImageDecodeError(DataError):
    """One image could not be decoded (corrupt, truncated, empty, unsupported).

    ``str(e)`` is "NAME: REASON"; ``e.reason`` is the reason alone, for reports that list the name already.
    """

    def __init__(self, reason: str, *, name: str | None = None) -> None:
        super().__init__(f"{name}: {reason}" if name else reason)
        self.reason = reason


class StoreError(FacelabError):
    """A store folder is missing, incomplete, or holds a different store."""


class ConfigError(FacelabError):
    """A configuration value or option is invalid."""
