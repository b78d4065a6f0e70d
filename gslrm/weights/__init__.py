"""Pretrained networks: where each comes from and is cached (``registry``), fetching and verifying (``download``),
and ``python -m gslrm.weights fetch|status`` for offline clusters."""

from gslrm.weights.download import WeightsChecksumError, ensure, fetch, offline, verify
from gslrm.weights.registry import SOURCES, Source, destination, source

__all__ = ["SOURCES", "Source", "WeightsChecksumError", "destination", "ensure", "fetch", "offline", "source", "verify"]
