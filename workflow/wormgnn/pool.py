"""Pool datasets: the worms of several member datasets as one dataset.

Each member is preprocessed by its own source and settings; the pool then brings every
worm to one frame rate and records each worm's member, so that the ``lodo`` protocol can
hold a whole member (another lab) out.

``python -m wormgnn.pool traces``: the members' ``traces.h5`` → the pool's. Every
channel is resampled by time to ``target_fps`` (default: the slowest raw frame rate of
any member worm, so no worm is upsampled beyond what it recorded) with the same
anti-aliasing as preprocessing, then z-scored again per ROI when ``zscore`` is on. Worms
are numbered in member order; names, ROI labels and indices are kept.

``python -m wormgnn.pool labels``: the members' ``labels.h5`` → the pool's. Each pool
frame takes the member state of the nearest member frame in time (within half a member
frame), and the states map to classes through the pool's scheme, which every member must
support.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wormgnn import files, names
from wormgnn.align_labels import (
    LABEL_NEURONS,
    Scheme,
    align_by_time,
    check_scheme,
    labels_summary,
    write_worm_labels,
)
from wormgnn.preprocess import resample, zscore

log = logging.getLogger("wormgnn.pool")


def default_fps(member_traces: list[Path]) -> float:
    """The slowest raw frame rate of any member worm."""
    rates = []
    for path in member_traces:
        with h5py.File(path, "r") as h5:
            rates += [float(g.attrs["fps_raw"]) for g in h5["worms"].values()]
    return min(rates)


def run_traces(
    pool: str,
    members: list[str],
    member_traces: list[Path],
    target_fps: float | None,
    rezscore: bool,
    traces_out: Path,
    summary_out: Path,
) -> dict[str, Any]:
    if len(members) != len(member_traces):
        raise ValueError(f"{len(members)} members but {len(member_traces)} traces files")
    fps = float(target_fps) if target_fps else default_fps(member_traces)
    worms: list[dict[str, Any]] = []
    channels: list[str] | None = None
    with files.atomic_path(traces_out) as tmp, h5py.File(tmp, "w") as out:
        for member, path in zip(members, member_traces, strict=True):
            with h5py.File(path, "r") as h5:
                mine = files.read_strings(h5["channels"])
                if channels is None:
                    channels = mine
                elif mine != channels:
                    raise ValueError(
                        f"pool {pool}: member {member} has channels {mine} but the members "
                        f"before it have {channels}; give the members the same "
                        "preprocess.derivative setting"
                    )
                for key in sorted(h5["worms"], key=int):
                    worms.append(
                        _copy_worm(
                            h5["worms"][key], member, int(key), len(worms), out, fps, rezscore
                        )
                    )
        shared = names.shared_names(w["names"] for w in worms)
        out.attrs.update(dataset=pool, n_worms=len(worms), members=members)
        files.write_strings(out, "channels", channels or [])
        files.write_strings(out, "shared_neurons", shared)
    for w in worms:
        log.info(
            "worm %d = %s worm %d (%s): %d ROIs, %.3f → %.3f fps, %d frames",
            w["worm"],
            w["member"],
            w["member_worm"],
            w["file"],
            w["n_rois"],
            w["fps_member"],
            fps,
            w["n_frames"],
        )
    summary = {
        "dataset": pool,
        "source": "pool",
        "members": members,
        "fps": fps,
        "fps_rule": "target_fps from config"
        if target_fps
        else "the slowest member worm's raw rate",
        "n_worms": len(worms),
        "channels": channels,
        "shared_neurons": shared,
        "n_shared_neurons": len(shared),
        "worms": [{k: v for k, v in w.items() if k != "names"} for w in worms],
    }
    files.write_json(summary_out, summary)
    log.info(
        "%s: %d worms from %s; %d shared identified neurons", pool, len(worms), members, len(shared)
    )
    return summary


def _copy_worm(
    src: h5py.Group,
    member: str,
    member_worm: int,
    worm: int,
    out: h5py.File,
    fps: float,
    rezscore: bool,
) -> dict[str, Any]:
    traces = src["traces"][()]
    t, n, c = traces.shape
    flat, time = resample(traces.reshape(t, n * c).astype(np.float64), src["time"][()], fps)
    if rezscore:
        flat = zscore(flat)
    g = out.create_group(f"worms/{worm}")
    g.create_dataset(
        "traces", data=flat.reshape(-1, n, c).astype(np.float32), compression="gzip", shuffle=True
    )
    g.create_dataset("time", data=time)
    g.create_dataset("roi_index", data=src["roi_index"][()])
    roi_names = files.read_strings(src["names"])
    files.write_strings(g, "names", roi_names)
    files.write_strings(g, "roi_labels", files.read_strings(src["roi_labels"]))
    attrs = dict(src.attrs)
    g.attrs.update(attrs)
    g.attrs.update(fps=fps, member=member, member_worm=member_worm, fps_member=float(attrs["fps"]))
    return {
        "worm": worm,
        "member": member,
        "member_worm": member_worm,
        "file": str(attrs.get("source_file", "")),
        "n_rois": n,
        "n_identified": sum(1 for x in roi_names if x),
        "n_frames": int(time.size),
        "fps_member": float(attrs["fps"]),
        "fps_raw": float(attrs.get("fps_raw", attrs["fps"])),
        "names": roi_names,
    }


def run_labels(
    pool_traces: Path,
    members: list[str],
    member_traces: list[Path],
    member_labels: list[Path],
    scheme: Scheme,
    label_neurons: list[str],
    exclude_label_neurons: bool,
    labels_out: Path,
    summary_out: Path,
) -> dict[str, Any]:
    inputs = {m: (t, lab) for m, t, lab in zip(members, member_traces, member_labels, strict=True)}
    classes = list(scheme.classes)
    worms_summary = []
    with (
        h5py.File(pool_traces, "r") as pool,
        files.atomic_path(labels_out) as tmp,
        h5py.File(tmp, "w") as out,
    ):
        dataset = str(pool.attrs["dataset"])
        out.attrs.update(dataset=dataset, scheme=scheme.name)
        files.write_strings(out, "classes", classes)
        for key in sorted(pool["worms"], key=int):
            worm = pool["worms"][key]
            member, member_worm = str(worm.attrs["member"]), int(worm.attrs["member_worm"])
            traces_path, labels_path = inputs[member]
            with h5py.File(traces_path, "r") as mt, h5py.File(labels_path, "r") as ml:
                m_time = mt[f"worms/{member_worm}/time"][()]
                m_fps = float(mt[f"worms/{member_worm}"].attrs["fps"])
                m_state = ml[f"worms/{member_worm}/state"][()]
                state_names = files.read_strings(ml[f"worms/{member_worm}/state_names"])
            where = f"pool {dataset} worm {key} ({member} worm {member_worm})"
            if state_names:
                check_scheme(scheme, state_names, where)
            index = align_by_time(m_time, m_fps, worm["time"][()])
            state = np.where(index >= 0, m_state[index], -1).astype(np.int16)
            entry = write_worm_labels(
                out,
                key,
                scheme,
                state,
                state_names,
                worm,
                label_neurons,
                exclude_label_neurons,
                where,
            )
            worms_summary.append(
                {
                    "worm": int(key),
                    "member": member,
                    "member_worm": member_worm,
                    "behaviour": bool(state_names),
                    **entry,
                }
            )
    summary = labels_summary(dataset, scheme, label_neurons, exclude_label_neurons, worms_summary)
    files.write_json(summary_out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.pool", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("traces", help="merge the members' traces.h5")
    t.add_argument("--dataset", required=True, help="the pool's name")
    t.add_argument("--members", nargs="+", required=True, help="member dataset names, in order")
    t.add_argument("--member-traces", type=Path, nargs="+", required=True)
    t.add_argument("--target-fps", type=float, default=None, help="default: slowest raw rate")
    t.add_argument("--no-zscore", action="store_true", help="do not z-score after resampling")
    t.add_argument("--traces", type=Path, required=True, help="output traces.h5")
    t.add_argument("--summary", type=Path, required=True, help="output summary.json")
    lab = sub.add_parser("labels", help="the members' labels on the pool's frames")
    lab.add_argument("--traces", type=Path, required=True, help="the pool's traces.h5")
    lab.add_argument("--members", nargs="+", required=True)
    lab.add_argument("--member-traces", type=Path, nargs="+", required=True)
    lab.add_argument("--member-labels", type=Path, nargs="+", required=True)
    lab.add_argument("--config", default="{}", help="the labels config block, as JSON")
    lab.add_argument("--labels", type=Path, required=True, help="output labels.h5")
    lab.add_argument("--summary", type=Path, required=True, help="output summary.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        if args.stage == "traces":
            run_traces(
                args.dataset,
                args.members,
                args.member_traces,
                args.target_fps,
                not args.no_zscore,
                args.traces,
                args.summary,
            )
        else:
            cfg = files.parse_json_arg(args.config, "config")
            run_labels(
                args.traces,
                args.members,
                args.member_traces,
                args.member_labels,
                Scheme.named(cfg.get("scheme", "kato4"), cfg.get("schemes")),
                list(cfg.get("label_neurons", LABEL_NEURONS)),
                bool(cfg.get("exclude_label_neurons", True)),
                args.labels,
                args.summary,
            )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
