"""Pretrained networks: where each comes from and is cached (``registry``), fetching and verifying (``download``),
loading a network's state dict (``loading``), and ``python -m gslrm.weights fetch|status`` for offline clusters."""

from gslrm.weights.download import WeightsChecksumError, ensure, fetch, offline, verify
from gslrm.weights.errors import MissingWeightsError
from gslrm.weights.loading import hub_checkpoint, load_state_dict, weights_path
from gslrm.weights.registry import SOURCES, Source, destination, source

__all__ = [
    "SOURCES",
    "MissingWeightsError",
    "Source",
    "WeightsChecksumError",
    "destination",
    "ensure",
    "fetch",
    "hub_checkpoint",
    "load_state_dict",
    "offline",
    "source",
    "verify",
    "weights_path",
]
