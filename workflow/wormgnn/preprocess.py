"""ΔF/F preprocessing: raw recordings → ``preprocessed/{traces.h5, summary.json}``.

The raw files are a Kato ``.mat`` or NWB files (:func:`wormgnn.sources.load`).

Per worm, in this order:

1. NaN gaps are filled by linear interpolation in time (edges by the nearest value), and
   counted. ROIs that are NaN throughout are dropped and listed.
2. ΔF/F: from raw fluorescence ``F`` when the file has it (``trace_source: auto|raw``),
   ``ΔF/F = (F - F0) / F0`` with ``F0`` a low running percentile over a long window, which
   follows photobleaching and so removes it. Otherwise the file's bleach-corrected ΔF/F.
3. Optional Gaussian smoothing (``smooth_sigma_s``).
4. Resampling to one common frame rate (``target_fps``) on a regular time grid, with a
   Gaussian anti-aliasing filter when downsampling.
5. Per-worm z-scoring of each ROI (label-free, so allowed on test worms).
6. A derivative channel: Savitzky-Golay first derivative (per second).

``traces.h5`` layout::

    /                     attrs: dataset, channels, n_worms
    /shared_neurons       (S,) identified names present in every worm
    /worms/<i>/traces     (T, N, C) float32, C = channels (``dff`` and maybe ``ddt``)
    /worms/<i>/time       (T,) seconds
    /worms/<i>/names      (N,) normalised identity, "" for unnamed ROIs
    /worms/<i>/roi_labels (N,) the file's candidate names, "/"-joined
    /worms/<i>/roi_index  (N,) ROI index in the file (dropped ROIs are absent)
                          attrs: fps, fps_raw, n_frames_raw, nan_filled, source,
                          source_file, trace_path (and member, member_worm in a pool)
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy import ndimage, signal

from wormgnn import files, names, sources
from wormgnn.sources import Recording

log = logging.getLogger("wormgnn.preprocess")


@dataclass
class PreprocessConfig:
    """Settings of the ``preprocess`` block of ``config.yaml`` (see the schema)."""

    trace_source: str = "auto"  # auto | raw | corrected
    baseline_percentile: float = 10.0
    baseline_window_s: float = 120.0
    smooth_sigma_s: float = 0.0
    target_fps: float | None = 3.0
    zscore: bool = True
    derivative: bool = True
    derivative_window_s: float = 2.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessConfig:
        cfg = files.settings(cls, values, "preprocess")
        if cfg.trace_source not in ("auto", "raw", "corrected"):
            raise ValueError(
                f"preprocess.trace_source is {cfg.trace_source!r}; use auto, raw or corrected"
            )
        return cfg


# --------------------------------------------------------------------------- steps
def fill_nan_gaps(x: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Interpolate NaNs along time, column by column.

    Returns the filled copy, the number of values filled, and a boolean mask of the
    columns that are NaN throughout (left as they are for the caller to drop).
    """
    x = np.array(x, dtype=np.float64, copy=True)
    missing = ~np.isfinite(x)
    all_missing = missing.all(axis=0)
    n_filled = 0
    for col in np.flatnonzero(missing.any(axis=0) & ~all_missing):
        bad = missing[:, col]
        x[bad, col] = np.interp(time[bad], time[~bad], x[~bad, col])
        n_filled += int(bad.sum())
    return x, n_filled, all_missing


def dff_from_raw(raw: np.ndarray, fps: float, percentile: float, window_s: float) -> np.ndarray:
    """ΔF/F against a running low-percentile baseline ``F0`` (which tracks bleaching).

    Shapes: ``raw`` is (T, N); so is the result. If a baseline is not positive, the input
    cannot be fluorescence (it is already a ΔF/F), and the baseline is subtracted instead
    of divided, which still removes the slow bleaching trend.
    """
    size = max(3, int(round(window_s * fps)) | 1)  # odd window, in frames
    size = min(size, raw.shape[0] | 1)
    baseline = ndimage.percentile_filter(raw, percentile, size=(size, 1), mode="nearest")
    if np.all(baseline > 0):
        return (raw - baseline) / baseline
    log.warning("baseline is not positive: input looks like ΔF/F already; subtracting it")
    return raw - baseline


def smooth(x: np.ndarray, fps: float, sigma_s: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 0); ``sigma_s <= 0`` returns ``x``."""
    if sigma_s <= 0:
        return x
    return ndimage.gaussian_filter1d(x, sigma_s * fps, axis=0, mode="nearest")


def resample(x: np.ndarray, time: np.ndarray, fps_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample (T, N) ``x`` sampled at ``time`` onto a regular grid at ``fps_out``.

    Interpolation is by time, so irregular frame times are honoured. When the source
    rate is clearly higher, a Gaussian low-pass (σ of half the decimation factor, in
    source frames) prevents aliasing.
    """
    fps_in = (len(time) - 1) / (time[-1] - time[0])
    if fps_in > 1.2 * fps_out:
        x = ndimage.gaussian_filter1d(x, 0.5 * fps_in / fps_out, axis=0, mode="nearest")
    n_out = int(np.floor((time[-1] - time[0]) * fps_out + 1e-9)) + 1
    grid = time[0] + np.arange(n_out) / fps_out
    out = np.empty((n_out, x.shape[1]))
    for col in range(x.shape[1]):
        out[:, col] = np.interp(grid, time, x[:, col])
    return out, grid


def zscore(x: np.ndarray) -> np.ndarray:
    """Z-score each column; constant columns become zeros rather than NaN."""
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def derivative(x: np.ndarray, fps: float, window_s: float) -> np.ndarray:
    """Savitzky-Golay (quadratic) first derivative along time, in units per second."""
    window = max(5, int(round(window_s * fps)) | 1)  # odd, and above the polynomial order
    longest = x.shape[0] if x.shape[0] % 2 else x.shape[0] - 1
    window = min(window, longest)
    return signal.savgol_filter(x, window, polyorder=2, deriv=1, delta=1.0 / fps, axis=0)


# --------------------------------------------------------------------------- per worm
@dataclass
class Processed:
    traces: np.ndarray  # (T, N, C)
    time: np.ndarray  # (T,)
    names: list[str]
    roi_labels: list[str]
    roi_index: np.ndarray
    fps: float
    source: str
    nan_filled: int
    dropped_rois: list[int]


def preprocess_recording(rec: Recording, cfg: PreprocessConfig) -> Processed:
    """Run every step on one worm; see the module docstring for the order."""
    use_raw = rec.raw is not None and cfg.trace_source in ("auto", "raw")
    if cfg.trace_source == "raw" and rec.raw is None:
        raise ValueError(
            f"worm {rec.worm}: trace_source is 'raw' but the file has no raw fluorescence "
            "(traces_raw); use 'auto' or 'corrected'"
        )
    if not use_raw and rec.dff is None:
        raise ValueError(f"worm {rec.worm}: the file has no bleach-corrected ΔF/F")
    data, nan_filled, all_missing = fill_nan_gaps(rec.raw if use_raw else rec.dff, rec.time)
    keep = np.flatnonzero(~all_missing)
    if all_missing.any():
        log.warning(
            "worm %d: dropping ROIs that are NaN throughout: %s",
            rec.worm,
            np.flatnonzero(all_missing).tolist(),
        )
    data = data[:, keep]
    if use_raw:
        data = dff_from_raw(data, rec.fps, cfg.baseline_percentile, cfg.baseline_window_s)
    data = smooth(data, rec.fps, cfg.smooth_sigma_s)
    if cfg.target_fps:
        data, time = resample(data, rec.time, cfg.target_fps)
        fps = float(cfg.target_fps)
    else:
        time, fps = rec.time, rec.fps
    if cfg.zscore:
        data = zscore(data)
    channels = [data]
    if cfg.derivative:
        ddt = derivative(data, fps, cfg.derivative_window_s)
        channels.append(zscore(ddt) if cfg.zscore else ddt)
    identities = names.resolve_worm(rec.roi_names)
    return Processed(
        traces=np.stack(channels, axis=-1).astype(np.float32),
        time=time,
        names=[identities[i] for i in keep],
        roi_labels=["/".join(rec.roi_names[i]) for i in keep],
        roi_index=keep,
        fps=fps,
        source="raw" if use_raw else "corrected",
        nan_filled=nan_filled,
        dropped_rois=np.flatnonzero(all_missing).tolist(),
    )


def channel_names(cfg: PreprocessConfig) -> list[str]:
    return ["dff", "ddt"] if cfg.derivative else ["dff"]


# --------------------------------------------------------------------------- stage
def run(
    raw: Path | Sequence[Path],
    dataset: str,
    cfg: PreprocessConfig,
    traces_out: Path,
    summary_out: Path,
    root: str | None = None,
    fmt: str = "kato",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Preprocess every worm of the raw file(s); write ``traces.h5`` and ``summary.json``.

    ``fmt`` and ``options``: the file format and its reading settings
    (:func:`wormgnn.sources.load`); ``root`` is the Kato root struct.
    """
    raw_paths = [Path(raw)] if isinstance(raw, str | Path) else [Path(p) for p in raw]
    options = {**(options or {}), **({"root": root} if root else {})}
    recordings = sources.load(fmt, raw_paths, options)
    log.info("%s: %d worms from %s", dataset, len(recordings), ", ".join(map(str, raw_paths)))
    processed = []
    for rec in recordings:
        processed.append(preprocess_recording(rec, cfg))
        p = processed[-1]
        log.info(
            "worm %d (%s): %d ROIs, %d → %d frames, %.3f → %.3f fps, %d NaN filled (%s, %s)",
            rec.worm,
            Path(rec.source_file).name,
            rec.n_rois,
            rec.n_frames,
            p.time.size,
            rec.fps,
            p.fps,
            p.nan_filled,
            p.source,
            rec.trace_path,
        )
    shared = names.shared_names(p.names for p in processed)
    with files.atomic_path(traces_out) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["dataset"] = dataset
        h5.attrs["n_worms"] = len(processed)
        files.write_strings(h5, "channels", channel_names(cfg))
        files.write_strings(h5, "shared_neurons", shared)
        for rec, p in zip(recordings, processed, strict=True):
            g = h5.create_group(f"worms/{rec.worm}")
            g.create_dataset("traces", data=p.traces, compression="gzip", shuffle=True)
            g.create_dataset("time", data=p.time)
            g.create_dataset("roi_index", data=p.roi_index)
            files.write_strings(g, "names", p.names)
            files.write_strings(g, "roi_labels", p.roi_labels)
            g.attrs.update(
                fps=p.fps,
                fps_raw=rec.fps,
                n_frames_raw=rec.n_frames,
                nan_filled=p.nan_filled,
                source=p.source,
                description=rec.description,
                source_file=Path(rec.source_file).name,
                trace_path=rec.trace_path,
            )
    summary = {
        "dataset": dataset,
        "format": fmt,
        "source_files": [str(p) for p in raw_paths],
        "n_worms": len(processed),
        "channels": channel_names(cfg),
        "config": asdict(cfg),
        "shared_neurons": shared,
        "n_shared_neurons": len(shared),
        "worms": [
            {
                "worm": rec.worm,
                "description": rec.description,
                "file": Path(rec.source_file).name,
                "trace_path": rec.trace_path,
                "n_rois": rec.n_rois,
                "n_rois_kept": len(p.names),
                "n_frames": int(p.time.size),
                "n_frames_raw": rec.n_frames,
                "fps_raw": rec.fps,
                "fps": p.fps,
                "n_identified": sum(1 for n in p.names if n),
                "nan_filled": p.nan_filled,
                "dropped_rois": p.dropped_rois,
                "trace_source": p.source,
            }
            for rec, p in zip(recordings, processed, strict=True)
        ],
    }
    files.write_json(summary_out, summary)
    log.info("%s: %d shared identified neurons", dataset, len(shared))
    return summary


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The raw files and how to read them (shared with ``align_labels``)."""
    parser.add_argument(
        "--raw", type=Path, nargs="+", required=True, help="a Kato .mat file, or NWB files"
    )
    parser.add_argument("--format", choices=("kato", "nwb"), default="kato", help="file format")
    parser.add_argument(
        "--options", default="{}", help="reading settings as JSON (root; series, ...)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.preprocess", description=__doc__.split("\n")[0]
    )
    add_source_arguments(parser)
    parser.add_argument("--dataset", required=True, help="dataset name (recorded in outputs)")
    parser.add_argument("--config", default="{}", help="the preprocess config block, as JSON")
    parser.add_argument("--traces", type=Path, required=True, help="output traces.h5")
    parser.add_argument("--summary", type=Path, required=True, help="output summary.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        cfg = PreprocessConfig.from_dict(files.parse_json_arg(args.config, "config"))
        options = files.parse_json_arg(args.options, "options")
        run(
            args.raw, args.dataset, cfg, args.traces, args.summary, fmt=args.format, options=options
        )
    except ValueError as err:  # includes SourceError: a message, not a traceback
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
