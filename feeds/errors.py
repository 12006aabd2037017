"""One error base class carrying a user-facing title; one subclass per area.

The CLI turns these into a clean message and an exit code (2 for config/usage, 1 for runtime);
nothing derived from ``HashwatchError`` ever reaches the user as a traceback.
"""

from __future__ import annotations


class HashwatchError(Exception):
    title = "hashwatch error"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(HashwatchError):
    title = "configuration error"
    exit_code = 2


class UsageError(HashwatchError):
    title = "usage error"
    exit_code = 2


class StoreError(HashwatchError):
    title = "database error"
    exit_code = 1


class ImportFileError(HashwatchError):
    title = "import error"
    exit_code = 2


class FeedError(HashwatchError):
    title = "feed error"


class FatalFeedError(FeedError):
    """Retrying cannot fix this (handshake 401/403/404, bad URL): report, do not loop."""
