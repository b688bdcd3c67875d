"""The anatomical C. elegans connectome, from the ``cect`` package (PyPI).

``cect`` (c302 / OpenWorm ConnectomeToolbox) ships the published wiring diagrams with a
cached matrix form, so no network is needed. Matrices here are indexed ``[pre, post]``
over the 302 hermaphrodite neurons, with names in the connectome's own spelling
(``VB1``), which :func:`wormgnn.names.normalise_name` also produces from Kato's ``VB01``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("wormgnn.connectome")

DEFAULT_CONNECTOME = "Cook2019Herm"


class ConnectomeUnavailable(RuntimeError):
    """The ``cect`` package (or the named reader) is not installed."""


@dataclass
class Connectome:
    source: str
    names: list[str]
    chemical: np.ndarray  #: (n, n) synapse counts, [pre, post]
    gap: np.ndarray  #: (n, n) gap-junction counts, symmetric

    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def adjacency(self, min_synapses: float = 1.0) -> np.ndarray:
        """Directed (n, n) bool graph: a chemical synapse, or a gap junction either way."""
        adj = (self.chemical >= min_synapses) | (self.gap >= min_synapses)
        np.fill_diagonal(adj, False)
        return adj

    def restrict(self, names: list[str]) -> np.ndarray:
        """Adjacency among ``names`` (any order; unknown names get no edges)."""
        idx = self.index()
        full = self.adjacency()
        pos = np.array([idx.get(n, -1) for n in names])
        known = pos >= 0
        out = np.zeros((len(names), len(names)), dtype=bool)
        out[np.ix_(known, known)] = full[np.ix_(pos[known], pos[known])]
        return out


def load_connectome(source: str = DEFAULT_CONNECTOME) -> Connectome:
    """Load a ``cect`` connectome restricted to the 302 hermaphrodite neurons."""
    try:
        from cect.Cells import PREFERRED_HERM_NEURON_NAMES
        from cect.Utils import get_connectome_dataset
    except ImportError as err:
        raise ConnectomeUnavailable(
            "the connectome package `cect` is not installed (pip install cect)"
        ) from err
    try:
        dataset = get_connectome_dataset(source, from_cache=True)
    except Exception as err:  # cect raises bare Exception for unknown names
        raise ConnectomeUnavailable(f"cect has no connectome {source!r}: {err}") from err
    nodes = list(dataset.nodes)
    keep = [i for i, n in enumerate(nodes) if n in set(PREFERRED_HERM_NEURON_NAMES)]
    conns = dataset.connections
    chemical = np.zeros((len(keep), len(keep)))
    gap = np.zeros_like(chemical)
    for key, matrix in conns.items():
        m = np.asarray(matrix, dtype=float)[np.ix_(keep, keep)]
        if "GJ" in key or "elec" in key.lower():
            gap += m
        else:
            chemical += m
    gap = np.maximum(gap, gap.T)
    log.info(
        "connectome %s: %d neurons, %d chemical and %d gap-junction pairs",
        source,
        len(keep),
        int((chemical > 0).sum()),
        int((np.triu(gap) > 0).sum()),
    )
    return Connectome(source=source, names=[nodes[i] for i in keep], chemical=chemical, gap=gap)


#: Neuron types used to order figures: cect's lists of Cook et al. 2019.
NEURON_TYPES = ("sensory", "interneuron", "motor", "other")


def neuron_types(names: list[str]) -> list[str]:
    """Cook et al. 2019's type of each neuron (left/right pairs share it); ``other`` for
    names cect does not list, or for every name when cect is not installed."""
    try:
        from cect.Cells import INTERNEURONS_COOK, MOTORNEURONS_COOK, SENSORY_NEURONS_COOK
    except ImportError:
        return ["other"] * len(names)
    groups = [
        ("sensory", set(SENSORY_NEURONS_COOK)),
        ("interneuron", set(INTERNEURONS_COOK)),
        ("motor", set(MOTORNEURONS_COOK)),
    ]
    return [next((t for t, members in groups if n in members), "other") for n in names]
