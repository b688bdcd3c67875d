"""Readers of raw recordings, one module per file format, and the form they all yield.

Every source gives one :class:`Recording` per worm; everything after loading
(preprocessing, labels, folds, models) is source-blind.

- ``kato`` (:mod:`wormgnn.kato`): the Kato et al. 2015 MATLAB files, both OSF schemas;
  the ``osf``, ``local`` and ``synthetic`` datasets (the synthetic worm is written in the
  same layout).
- ``nwb`` (:mod:`wormgnn.sources.nwb`): NWB files of any lab in the C. elegans NWB
  convention, one worm per file; the ``nwb`` and ``dandi`` datasets, and the synthetic
  worm with ``synthetic.format: nwb``.

A ``pool`` dataset is not read from raw files: it merges its members' preprocessed worms
(:mod:`wormgnn.pool`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class SourceError(ValueError):
    """A file that cannot be read as a recording; the message names it and says why."""


@dataclass
class Recording:
    """One worm, as read from its file, before any preprocessing.

    Shapes: ``T`` frames, ``N`` ROIs.
    """

    worm: int  #: index of the worm in the dataset (0-based)
    description: str  #: what the file says about this worm (Kato's ``dataset`` string)
    fps: float
    time: np.ndarray  #: (T,) seconds
    dff: np.ndarray | None  #: (T, N) ΔF/F as stored in the file (bleach-corrected for Kato)
    raw: np.ndarray | None  #: (T, N) raw fluorescence
    roi_names: list[list[str]]  #: candidate names per ROI as written in the file
    states: np.ndarray  #: (T,) index into ``state_names``; -1 where no state is set
    state_names: list[str]  #: canonical upper-case state names (``FWD``, ``REV1``, ...)
    source_file: str = ""  #: the file this worm was read from
    trace_path: str = ""  #: where in the file the traces were found
    behaviour: str = ""  #: where the states came from; "" when the file has none

    @property
    def n_frames(self) -> int:
        return int(self.time.shape[0])

    @property
    def n_rois(self) -> int:
        return len(self.roi_names)

    @property
    def has_behaviour(self) -> bool:
        return bool(self.behaviour)


def load(fmt: str, paths: Sequence[str | Path], options: dict[str, Any] | None = None):
    """Every worm of a dataset: ``fmt`` is ``kato`` (one ``.mat`` file, all its worms)
    or ``nwb`` (one worm per file, in the given order).

    ``options``: ``root`` (kato); ``series``, ``uncertain_names``, ``behaviour`` (nwb).
    """
    options = dict(options or {})
    paths = [Path(p) for p in paths]
    if fmt == "kato":
        from wormgnn.kato import load_recordings

        if len(paths) != 1:
            raise SourceError(f"a Kato dataset is one .mat file; got {len(paths)} paths")
        return load_recordings(paths[0], root=options.get("root"))
    if fmt == "nwb":
        from wormgnn.sources.nwb import NWBOptions, load_files

        return load_files(paths, NWBOptions.from_dict(options))
    raise SourceError(f"unknown file format {fmt!r}; use kato or nwb")
