"""The one error of pretrained weights that the entry points turn into one line."""

__all__ = ["MissingWeightsError"]


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on this machine and cannot be fetched; the message says what to do (one line)."""
