"""Errors of the codec layer."""


class InvalidOpusError(ValueError):
    """The bytes are not a complete, valid Ogg Opus stream; the message says why."""
