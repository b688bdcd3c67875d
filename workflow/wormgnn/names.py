"""Neuron-name normalisation shared by the loader, the labels and the connectome.

Kato et al. 2015 zero-pad motor-neuron numbers (``VB01``) while connectome tables write
``VB1``. ROIs without an identity carry their 1-based index (new schema) or an empty cell
(old schema); ambiguous ROIs list several candidates (``OLQDR``/``URYDR``), sometimes
with ``'---'``. Both kinds become unnamed nodes, represented by the empty string.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

_ZERO_PADDED = re.compile(r"^([A-Z]+)0+([1-9][0-9]*)$")
_NAME = re.compile(r"^[A-Z][A-Z0-9]*$")
_PLACEHOLDERS = {"", "---", "NAN", "?"}


def normalise_name(name: str) -> str:
    """Return the canonical form of one candidate name, or ``""`` if it names nothing.

    >>> normalise_name(" vb01 "), normalise_name("AVAL"), normalise_name("17")
    ('VB1', 'AVAL', '')
    """
    text = name.strip().upper()
    if text in _PLACEHOLDERS or text.isdigit() or not _NAME.match(text):
        return ""
    return _ZERO_PADDED.sub(r"\1\2", text)


def resolve_identity(candidates: str | Sequence[str]) -> str:
    """The single identity of an ROI, or ``""`` when it is unidentified or ambiguous."""
    if isinstance(candidates, str):
        candidates = [candidates]
    names = {normalise_name(c) for c in candidates} - {""}
    return names.pop() if len(names) == 1 else ""


def resolve_worm(candidates_per_roi: Iterable[str | Sequence[str]]) -> list[str]:
    """Identities for every ROI of one worm; a name claimed by two ROIs is ambiguous."""
    names = [resolve_identity(c) for c in candidates_per_roi]
    counts = Counter(n for n in names if n)
    return [n if counts[n] == 1 else "" for n in names]


def shared_names(per_worm: Iterable[Sequence[str]]) -> list[str]:
    """Identified names present in every worm, sorted."""
    sets = [set(names) - {""} for names in per_worm]
    return sorted(set.intersection(*sets)) if sets else []


def matches_class(name: str, classes: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``classes`` or its left/right member (``AVA`` → ``AVAL``).

    Matching is exact, so ``AVAL`` is not in a class ``AV``.
    """
    norm = normalise_name(name)
    return bool(norm) and any(norm in (c, c + "L", c + "R") for c in classes)
