"""Hyperparameter search spaces (``models.<name>.search``): plain Python with no
third-party import, so that the Snakefile can check every model's budget before
anything runs. See :mod:`wormgnn.select` for what selection does with them."""

from __future__ import annotations

import itertools
from typing import Any

TASKS = ("forecast", "behaviour")


def grid(search: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """The candidates of a search space for ``task``: the product of its value lists, in
    the order the keys are given (the task's own keys after the general ones)."""
    space = {k: v for k, v in search.items() if k not in TASKS}
    space.update(search.get(task) or {})
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"search: {key} must list one or more values, not {values!r}")
    keys = list(space)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*space.values())]
