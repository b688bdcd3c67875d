"""Export a dataset as NWB files, one per worm, in the C. elegans NWB layout.

``python -m wormgnn.export --raw WT_NoStim.mat --out-dir nwb/ --manifest nwb/manifest.json``
writes ``sub-<dataset>-<i>_ophys.nwb`` per worm (``<i>`` zero-padded, so the sorted file
order is the worm order) and then ``manifest.json``, which lists them. The layout is the
one :mod:`wormgnn.sources.nwb` reads and ``../shared/NWB.md`` describes:

- ``processing/CalciumActivity/SignalRawFluor/SignalCalciumImResponseSeries`` when the
  source has raw fluorescence, else ``.../SignalDFoF/...`` with its ΔF/F (what
  preprocessing with ``trace_source: auto`` reads, so both forms preprocess alike);
  ``rate`` for evenly spaced frames, else ``timestamps``;
- ``processing/CalciumActivity/CalciumSeriesSegmentation/Aligned_neuron_coordinates``,
  a plane segmentation whose ``ID_labels`` column holds each ROI's resolved name (``''``
  for unnamed or ambiguous ROIs). The sources have no positions; NWB requires a mask,
  so each ROI's ``voxel_mask`` is one voxel at the origin with weight 0;
- ``processing/Behavior/reversal_events``: the reversal bouts (1-based, inclusive frames),
  the behaviour that labs share;
- ``intervals/behaviour_states``: the full state sequence (start, stop, state), so that
  schemes finer than forward/reversal (``kato4``) and excluded frames (turns, NOSTATE)
  survive the round trip.

Files are written by ``pynwb`` (so they validate as NWB); each file appears under its
name only when complete.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wormgnn import files, names, sources
from wormgnn.sources import Recording
from wormgnn.sources.nwb import STATE_INTERVALS, STATES_PREFIX

log = logging.getLogger("wormgnn.export")


def state_runs(states: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of one state: (start, stop, state index) with ``stop`` exclusive; frames
    without a state (-1) are in no run."""
    edges = np.flatnonzero(np.diff(states)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [states.size]])
    return [
        (int(a), int(b), int(states[a]))
        for a, b in zip(starts, stops, strict=True)
        if states[a] >= 0
    ]


def reversal_bouts(rec: Recording) -> np.ndarray:
    """(n, 2) start and stop frame of each run of a reversal state, 1-based, inclusive."""
    reversal = np.array([n.startswith("REV") for n in rec.state_names] + [False])
    rev = reversal[rec.states].astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rev, [0]])))
    return np.stack([edges[::2] + 1, edges[1::2]], axis=1).astype(np.int64)


def build_nwbfile(rec: Recording, dataset: str):
    """The in-memory ``pynwb.NWBFile`` of one worm."""
    from pynwb import NWBFile
    from pynwb.base import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.epoch import TimeIntervals
    from pynwb.ophys import (
        DfOverF,
        Fluorescence,
        ImageSegmentation,
        OpticalChannel,
        PlaneSegmentation,
    )

    nwb = NWBFile(
        session_description=f"{dataset} worm {rec.worm}: {rec.description}".strip(": "),
        identifier=f"{dataset}-{rec.worm}",
        session_start_time=datetime(2000, 1, 1, tzinfo=UTC),
        source_script="wormgnn.export",
        source_script_file_name="workflow/wormgnn/export.py",
    )
    device = nwb.create_device("microscope", description=f"from {Path(rec.source_file).name}")
    plane = nwb.create_imaging_plane(
        "CalciumImVol",
        OpticalChannel(name="GCaMP", description="GCaMP emission", emission_lambda=520.0),
        description="whole-brain volume",
        device=device,
        excitation_lambda=488.0,
        indicator="GCaMP",
        location="head",
    )
    module = nwb.create_processing_module("CalciumActivity", "Calcium time series, segmentation")
    table = PlaneSegmentation(
        name="Aligned_neuron_coordinates",
        description="one row per trace column",
        imaging_plane=plane,
    )
    table.add_column("ID_labels", "Neuron names ('' = unnamed)")
    for label in names.resolve_worm(rec.roi_names):
        table.add_roi(voxel_mask=[(0, 0, 0, 0.0)], ID_labels=label)
    module.add(ImageSegmentation(name="CalciumSeriesSegmentation", plane_segmentations=[table]))
    region = table.create_roi_table_region("all ROIs", region=list(range(rec.n_rois)))
    raw = rec.raw is not None
    data = rec.raw if raw else rec.dff
    timing = _timing(rec.time)
    container, name = (Fluorescence, "SignalRawFluor") if raw else (DfOverF, "SignalDFoF")
    traces = container(name=name)
    module.add(traces)
    traces.create_roi_response_series(
        name="SignalCalciumImResponseSeries",
        description="raw fluorescence" if raw else "ΔF/F as stored in the source",
        data=np.asarray(data, dtype=np.float32),
        rois=region,
        unit="a.u.",
        **timing,
    )
    if rec.has_behaviour:
        bouts = reversal_bouts(rec)
        behaviour = nwb.create_processing_module("Behavior", "Behavioral data")
        events = TimeSeries(
            name="reversal_events",
            description="reversal start/stop frames of the calcium series (1-based, inclusive)",
            data=bouts,
            unit="frames",
            timestamps=rec.time[bouts[:, 0] - 1] if len(bouts) else np.zeros(0),
        )
        behaviour.add(BehavioralTimeSeries(name="reversal_events", time_series=[events]))
        intervals = TimeIntervals(
            name=STATE_INTERVALS.rsplit("/", 1)[1], description=f"states from {rec.behaviour}"
        )
        intervals.add_column("state", STATES_PREFIX + ", ".join(rec.state_names))
        period = float(np.median(np.diff(rec.time))) if rec.n_frames > 1 else 1.0
        ends = np.concatenate([rec.time[1:], [rec.time[-1] + period]])
        for start, stop, state in state_runs(rec.states):
            intervals.add_row(
                start_time=float(rec.time[start]),
                stop_time=float(ends[stop - 1]),
                state=rec.state_names[state],
            )
        nwb.add_time_intervals(intervals)
    return nwb


def _timing(time: np.ndarray) -> dict[str, Any]:
    """``rate`` and ``starting_time`` for evenly spaced frames, else ``timestamps``."""
    if time.size > 1:
        steps = np.diff(time)
        if np.allclose(steps, steps.mean(), rtol=1e-6, atol=1e-9):
            return {"rate": float(1.0 / steps.mean()), "starting_time": float(time[0])}
    return {"timestamps": np.asarray(time, dtype=np.float64)}


def run(
    raw: list[Path],
    dataset: str,
    out_dir: Path,
    manifest: Path,
    fmt: str = "kato",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every worm of ``raw`` as one NWB file in ``out_dir``, then the manifest."""
    from pynwb import NWBHDF5IO

    recordings = sources.load(fmt, raw, options)
    width = max(2, len(str(len(recordings) - 1)))
    written = []
    for rec in recordings:
        path = out_dir / f"sub-{dataset}-{rec.worm:0{width}d}_ophys.nwb"
        with files.atomic_path(path, suffix=".nwb") as tmp, NWBHDF5IO(str(tmp), "w") as io:
            io.write(build_nwbfile(rec, dataset))
        log.info("worm %d: %d frames, %d ROIs -> %s", rec.worm, rec.n_frames, rec.n_rois, path)
        written.append({"file": path.name, "sha256": files.sha256(path), "worm": rec.worm})
    summary = {"dataset": dataset, "source": [str(p) for p in raw], "files": written}
    files.write_json(manifest, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    from wormgnn.preprocess import add_source_arguments

    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.export", description=__doc__.split("\n")[0]
    )
    add_source_arguments(parser)
    parser.add_argument("--dataset", required=True, help="dataset name (in file names)")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder of the NWB files")
    parser.add_argument("--manifest", type=Path, required=True, help="output manifest.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        options = files.parse_json_arg(args.options, "options")
        run(args.raw, args.dataset, args.out_dir, args.manifest, args.format, options)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
