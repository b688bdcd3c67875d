"""NWB recordings of any lab, one worm per file, in the C. elegans NWB convention.

The reader uses plain ``h5py`` paths, not ``pynwb``. The convention's names are prose,
not a schema (``../shared/NWB.md``); the extension that types them
(``ndx-multichannel-volume``) pins ``pynwb<3``, and ``pynwb`` without it would still have
to be told where to look. Reading by path needs nothing beyond ``h5py``, which every data
rule already has, can range-read a remote file's ``processing/`` without its video, and
reports a missing path in the file's own terms.

**Traces.** The first of these that exists (or ``series: <path>`` from the config):

1. ``processing/CalciumActivity/SignalDFoF/SignalCalciumImResponseSeries`` (ΔF/F);
2. ``processing/CalciumActivity/SignalRawFluor/SignalCalciumImResponseSeries`` (raw);
3. ``processing/CalciumActivity/SignalCalciumImResponseSeries`` (directly under the module);
4. the older names ``processing/CalciumActivity/SignalFluorescence/*`` and
   ``processing/*/Fluorescence/GCaMP_activity``.

A series is ΔF/F when its container is a ``DfOverF`` (or is named like one), else raw
fluorescence, which preprocessing turns into ΔF/F by the same running-baseline rule as
Kato's raw traces. Data are (time, ROI); timing is ``timestamps``, or ``starting_time``
with its ``rate`` attribute.

**Names.** ``processing/CalciumActivity/NeuronIDs/labels`` (or an ``ID_labels`` column
inside ``NeuronIDs``), else the ``ID_labels`` column of the segmentation table that the
series' ``rois`` refer to, indexed by ``rois``. Never the NeuroPAL image table, which
names the image's ROIs, not the traces' columns. Strings, or ragged lists of characters
(``ID_labels`` + ``ID_labels_index``) joined per ROI. ``''``, ``'nan'`` and numbers are
unnamed; a name ending in ``?`` is uncertain and is dropped (unnamed) unless
``uncertain_names: keep``; a name on two ROIs makes both unnamed, with a warning.

**Behaviour**, into per-frame states:

- ``intervals/behaviour_states`` (what :mod:`wormgnn.export` writes): a table of
  (start_time, stop_time, state); a frame takes the state whose interval holds its time,
  so Kato's eight states and their gaps survive a round trip through NWB. Other files
  carry forward and reversal only, as ``FWD`` and ``REV``:
- ``processing/Behavior/reversal_events``: bouts, one row per bout, start and stop
  frame of the calcium series (1-based, inclusive). Frames inside a bout are ``REV``, all
  others ``FWD``.
- else ``processing/Behavior/velocity`` (signed, negative = backwards): ``REV`` where the
  velocity, taken at the nearest behaviour sample in time, is below
  ``-velocity_threshold`` for at least ``min_reversal_s`` seconds in a row; ``FWD``
  elsewhere; no state where the velocity is NaN.
- else none: the worm serves the forecast task only.

On the two real Flavell recordings (``../shared/data/flavell2023_noid``), the velocity
rule with its defaults (0.005 mm/s, 1 s) agrees with the lab's reversal bouts on 100.0 %
and 99.9 % of frames (tested), so the two paths define the same classes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wormgnn import files, matfile
from wormgnn.kato import canonical_state
from wormgnn.schemes import NWB_STATES
from wormgnn.sources import Recording, SourceError

log = logging.getLogger("wormgnn.sources.nwb")

MODULE = "processing/CalciumActivity"
SERIES = "SignalCalciumImResponseSeries"
#: Trace locations, probed in this order (a ``*`` takes the first member that is a series).
TRACE_PATHS = (
    f"{MODULE}/SignalDFoF/{SERIES}",
    f"{MODULE}/SignalRawFluor/{SERIES}",
    f"{MODULE}/{SERIES}",
    f"{MODULE}/SignalFluorescence/*",
    "processing/*/Fluorescence/GCaMP_activity",
)
NAME_PATHS = (f"{MODULE}/NeuronIDs/labels", f"{MODULE}/NeuronIDs/**/ID_labels")
REVERSALS = "processing/Behavior/reversal_events"
VELOCITY = "processing/Behavior/velocity"
#: The full state sequence, as :mod:`wormgnn.export` writes it (not part of the convention).
STATE_INTERVALS = "intervals/behaviour_states"
#: How that table's ``state`` column description lists every state the recording can carry.
STATES_PREFIX = "behavioural state; one of: "


@dataclass
class NWBOptions:
    """Reading settings of an ``nwb`` or ``dandi`` dataset (config keys of the same name)."""

    series: str | None = None  #: path of the trace series inside the file; None: probe
    uncertain_names: str = "drop"  #: drop | keep: names ending in "?"
    velocity_threshold: float = 0.005  #: mm/s; below minus this is backwards
    min_reversal_s: float = 1.0  #: shorter runs of backward velocity are not reversals

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NWBOptions:
        behaviour = dict(values.get("behaviour") or {})
        values = {k: v for k, v in values.items() if k in ("series", "uncertain_names")}
        opts = files.settings(cls, {**values, **behaviour}, "nwb")
        if opts.uncertain_names not in ("drop", "keep"):
            raise ValueError(f"uncertain_names is {opts.uncertain_names!r}; use drop or keep")
        return opts


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """The NWB files that ``paths`` name: files as given, a folder's ``*.nwb`` sorted, and
    the files a ``manifest.json`` lists (of a DANDI download or an export)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(path.glob("*.nwb"))
        elif path.suffix == ".json":
            found += [path.parent / entry["file"] for entry in files.read_json(path)["files"]]
        else:
            found.append(path)
    return found


def load_files(paths: Sequence[Path], opts: NWBOptions) -> list[Recording]:
    """One :class:`Recording` per file, worm ``i`` from the ``i``-th file."""
    paths = expand_paths(paths)
    if not paths:
        raise SourceError("no NWB files to read")
    return [load_file(p, i, opts) for i, p in enumerate(paths)]


def load_file(path: Path, worm: int, opts: NWBOptions) -> Recording:
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    if not matfile.is_hdf5(path):
        what, advice = matfile.identify_non_hdf5(path, kind="NWB")
        raise SourceError(f"{path}: not an NWB (HDF5) file: {what}. {advice}")
    try:
        with h5py.File(path, "r") as handle:
            return _read(path, handle, worm, opts)
    except SourceError:
        raise
    except (OSError, KeyError, RuntimeError) as err:
        raise SourceError(
            f"{path}: the HDF5 structure is damaged ({err}); the file is probably "
            "truncated. Copy or download it again."
        ) from err


def _read(path: Path, h5: h5py.File, worm: int, opts: NWBOptions) -> Recording:
    series_path = _find_series(path, h5, opts.series)
    series = h5[series_path]
    data = np.asarray(series["data"][()], dtype=np.float64)
    if data.ndim != 2:
        raise SourceError(f"{path}: {series_path}/data is not (time, ROI): shape {data.shape}")
    time = _timing(path, series_path, series, data.shape[0])
    fps = 1.0 / float(np.median(np.diff(time))) if time.size > 1 else 1.0
    roi_names = _names(path, h5, series, data.shape[1], opts)
    kind = _kind(h5, series_path)
    states, state_names, behaviour = _behaviour(path, h5, time, opts)
    return Recording(
        worm=worm,
        description=path.name,
        fps=fps,
        time=time,
        dff=data if kind == "dff" else None,
        raw=data if kind == "raw" else None,
        roi_names=roi_names,
        states=states,
        state_names=state_names,
        source_file=str(path),
        trace_path=series_path,
        behaviour=behaviour,
    )


def _is_series(node: Any) -> bool:
    return isinstance(node, h5py.Group) and "data" in node


def _find_series(path: Path, h5: h5py.File, override: str | None) -> str:
    if override:
        if _is_series(h5.get(override)):
            return override.strip("/")
        raise SourceError(
            f"{path}: no calcium series at {override!r} (the dataset's `series`); "
            f"the file's processing modules are {sorted(h5.get('processing', {}))}"
        )
    for pattern in TRACE_PATHS:
        for candidate in _expand(h5, pattern):
            if _is_series(h5.get(candidate)):
                return candidate
    raise SourceError(
        f"{path}: no calcium series found; tried {', '.join(TRACE_PATHS)}. Set `series:` "
        f"for this dataset to its path in the file (processing modules present: "
        f"{sorted(h5.get('processing', {}))})"
    )


def _expand(h5: h5py.File, pattern: str) -> list[str]:
    """Paths matching ``pattern``: ``*`` is one level, ``**`` any depth (sorted)."""
    found = [""]
    for part in pattern.split("/"):
        matches: list[str] = []
        for base in found:
            node = h5.get(base) if base else h5
            if not isinstance(node, h5py.Group):
                continue
            if part == "*":
                inner = sorted(node)
            elif part == "**":
                inner = [""]
                node.visit(inner.append)
            else:
                inner = [part] if part in node else []
            matches += [f"{base}/{k}".strip("/") for k in inner]
        found = list(dict.fromkeys(matches))
    return found


def _kind(h5: h5py.File, series_path: str) -> str:
    parent = series_path.rsplit("/", 1)[0]
    node_type = str(h5[parent].attrs.get("neurodata_type", ""))
    name = parent.rsplit("/", 1)[-1].lower()
    return "dff" if node_type == "DfOverF" or "dfof" in name or "dff" in name else "raw"


def _timing(path: Path, series_path: str, series: h5py.Group, n_frames: int) -> np.ndarray:
    if "timestamps" in series:
        time = np.asarray(series["timestamps"][()], dtype=np.float64).ravel()
        if time.size != n_frames:
            raise SourceError(
                f"{path}: {series_path} has {time.size} timestamps for {n_frames} frames"
            )
        if time.size > 1 and not np.all(np.diff(time) > 0):
            raise SourceError(f"{path}: {series_path}/timestamps do not increase")
        return time
    if "starting_time" in series and "rate" in series["starting_time"].attrs:
        rate = float(series["starting_time"].attrs["rate"])
        if not np.isfinite(rate) or rate <= 0:
            raise SourceError(f"{path}: {series_path} has rate {rate}; it must be positive")
        return float(series["starting_time"][()]) + np.arange(n_frames) / rate
    raise SourceError(f"{path}: {series_path} has neither timestamps nor starting_time with a rate")


# --------------------------------------------------------------------------- names
def _names(
    path: Path, h5: h5py.File, series: h5py.Group, n_rois: int, opts: NWBOptions
) -> list[list[str]]:
    where, labels = _find_labels(h5, series)
    if labels is None:
        log.info("%s: no neuron names (NeuronIDs or ID_labels); every ROI is unnamed", path)
        return [[] for _ in range(n_rois)]
    if len(labels) != n_rois:
        raise SourceError(
            f"{path}: {where} has {len(labels)} names for {n_rois} trace columns; "
            "the names must list the trace's ROIs, one per column"
        )
    cleaned = [_clean_label(label, opts.uncertain_names) for label in labels]
    counts = Counter(c.upper() for c in cleaned if c)
    duplicates = sorted(n for n, k in counts.items() if k > 1)
    if duplicates:
        log.warning(
            "%s: names given to more than one ROI are left unnamed on all of them: %s",
            path,
            ", ".join(duplicates),
        )
    return [[c] if c and c.upper() not in duplicates else [] for c in cleaned]


def _find_labels(h5: h5py.File, series: h5py.Group) -> tuple[str, list[str] | None]:
    for pattern in NAME_PATHS:
        for candidate in _expand(h5, pattern):
            node = h5.get(candidate)
            if isinstance(node, h5py.Dataset):
                return candidate, _strings(node, h5.get(candidate + "_index"))
    rois = series.get("rois")
    if rois is not None and "table" in rois.attrs:
        table = h5[rois.attrs["table"]]
        if "ID_labels" in table:
            rows = np.asarray(rois[()], dtype=np.int64)
            column = _strings(table["ID_labels"], table.get("ID_labels_index"))
            where = f"{table.name.strip('/')}/ID_labels"
            if rows.size and (rows.min() < 0 or rows.max() >= len(column)):
                raise SourceError(f"{h5.filename}: {series.name}/rois points outside {where}")
            return where, [column[r] for r in rows]
    return "", None


def _strings(column: h5py.Dataset, index: h5py.Dataset | None) -> list[str]:
    """A text column: one string per row, or ragged (``index`` holds each row's end)."""
    values = [v.decode() if isinstance(v, bytes) else str(v) for v in column[()].ravel()]
    if index is None:
        return values
    ends = np.asarray(index[()], dtype=np.int64).ravel()
    starts = np.concatenate([[0], ends[:-1]])
    return ["".join(values[a:b]) for a, b in zip(starts, ends, strict=True)]


def _clean_label(label: str, uncertain: str) -> str:
    text = label.strip()
    if text.endswith("?"):
        text = text.rstrip("?").strip() if uncertain == "keep" else ""
    return "" if text.lower() in ("", "nan", "none") else text


# --------------------------------------------------------------------------- behaviour
def _behaviour(
    path: Path, h5: h5py.File, time: np.ndarray, opts: NWBOptions
) -> tuple[np.ndarray, list[str], str]:
    n = time.size
    intervals = h5.get(STATE_INTERVALS)
    if isinstance(intervals, h5py.Group) and "state" in intervals:
        return _interval_states(intervals, time)
    bouts = _series_in(h5, REVERSALS)
    if bouts is not None:
        frames = np.asarray(bouts["data"][()], dtype=np.int64).reshape(-1, 2)
        if frames.size and (
            frames.min() < 1 or frames.max() > n or (frames[:, 1] < frames[:, 0]).any()
        ):
            raise SourceError(
                f"{path}: {bouts.name} has bouts outside frames 1..{n} of the calcium series "
                "(start and stop are 1-based, inclusive)"
            )
        states = np.zeros(n, dtype=np.int16)
        for start, stop in frames:
            states[start - 1 : stop] = 1
        return states, list(NWB_STATES), f"{bouts.name.strip('/')} ({len(frames)} bouts)"
    velocity = _series_in(h5, VELOCITY)
    if velocity is not None:
        v = np.asarray(velocity["data"][()], dtype=np.float64).ravel()
        v_time = _timing(path, velocity.name, velocity, v.size)
        at = np.clip(np.searchsorted(v_time, time), 0, v.size - 1)
        prev = np.clip(at - 1, 0, v.size - 1)
        at = np.where(np.abs(v_time[prev] - time) < np.abs(v_time[at] - time), prev, at)
        v = v[at]
        states = velocity_states(v, time, opts.velocity_threshold, opts.min_reversal_s)
        rule = f"< -{opts.velocity_threshold:g} for >= {opts.min_reversal_s:g} s"
        return states, list(NWB_STATES), f"{velocity.name.strip('/')} {rule}"
    return np.full(n, -1, dtype=np.int16), [], ""


def _interval_states(table: h5py.Group, time: np.ndarray) -> tuple[np.ndarray, list[str], str]:
    """Per-frame states from a table of (start_time, stop_time, state) intervals: a frame
    takes the state of the interval with ``start <= t < stop``, else none."""
    start = np.asarray(table["start_time"][()], dtype=np.float64)
    stop = np.asarray(table["stop_time"][()], dtype=np.float64)
    labels = [canonical_state(s) for s in _strings(table["state"], None)]
    listed = str(table["state"].attrs.get("description", ""))
    names = [canonical_state(s) for s in listed.partition(STATES_PREFIX)[2].split(",") if s.strip()]
    names = list(dict.fromkeys(names + labels))
    states = np.full(time.size, -1, dtype=np.int16)
    for a, b, label in zip(start, stop, labels, strict=True):
        states[(time >= a - 1e-9) & (time < b - 1e-9)] = names.index(label)
    return states, names, f"{table.name.strip('/')} ({len(labels)} intervals)"


def _series_in(h5: h5py.File, path: str) -> h5py.Group | None:
    """The time series at ``path``, or the one series inside the container there."""
    node = h5.get(path)
    if _is_series(node):
        return node
    if isinstance(node, h5py.Group):
        inner = [node[k] for k in node if _is_series(node[k])]
        return inner[0] if inner else None
    return None


def velocity_states(
    velocity: np.ndarray, time: np.ndarray, threshold: float, min_s: float
) -> np.ndarray:
    """``1`` (REV) where ``velocity < -threshold`` for at least ``min_s`` seconds in a
    row, ``0`` (FWD) elsewhere, ``-1`` where the velocity is NaN."""
    backward = velocity < -threshold
    states = np.zeros(velocity.size, dtype=np.int16)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], backward.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        duration = time[stop - 1] - time[start] + (time[1] - time[0] if time.size > 1 else 0)
        if duration >= min_s - 1e-9:
            states[start:stop] = 1
    states[~np.isfinite(velocity)] = -1
    return states
