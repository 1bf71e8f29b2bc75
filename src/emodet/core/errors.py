"""Exceptions a user can cause. The CLI turns each into one clear line and an exit code."""


class EmodetError(Exception):
    """Base class of every error emodet raises for a user's input."""

    exit_code = 1


class UsageError(EmodetError):
    """A wrong flag, key, name or value: the user must change the command or config."""

    exit_code = 2


class UnknownNameError(UsageError, LookupError):
    """A registry lookup for a name that is not registered."""


class AudioError(EmodetError):
    """A file that cannot be read as audio (unreadable, empty, non-finite samples)."""
