"""Cross-validation folds: ``results/{dataset}/folds.json``.

- ``lowo`` (leave one worm out): fold *k* tests on worm *k* and trains on all others, so
  the test worm is never seen in training.
- ``lodo`` (leave one dataset out, pools only): fold *k* tests on every worm of the
  pool's *k*-th member and trains on the other members' worms.
- ``within`` (per-worm temporal split): every worm's frames are cut into ``n_folds``
  contiguous blocks; fold *k* tests on block *k* of each worm and trains on what lies
  more than ``gap_s`` seconds away from it, so that autocorrelated frames next to the
  test block cannot leak into training.

``plan`` says what the dataset supports (behaviour labels, the size of the shared node
set), so that the workflow plans only jobs that can run. Segments are half-open frame
ranges ``[start, stop)`` on the preprocessed time grid.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import h5py

from wormgnn import files

log = logging.getLogger("wormgnn.make_folds")


def lowo_folds(n_frames: dict[int, int]) -> list[dict[str, Any]]:
    worms = sorted(n_frames)
    if len(worms) < 2:
        raise ValueError(f"lowo needs at least 2 worms; the dataset has {len(worms)}")
    return [
        {
            "fold": k,
            "test_worms": [test],
            "train_worms": [w for w in worms if w != test],
            "train": {str(w): [[0, n_frames[w]]] for w in worms if w != test},
            "test": {str(test): [[0, n_frames[test]]]},
        }
        for k, test in enumerate(worms)
    ]


def within_folds(
    n_frames: dict[int, int], fps: dict[int, float], n_folds: int, gap_s: float
) -> list[dict[str, Any]]:
    if n_folds < 2:
        raise ValueError(f"folds.within.n_folds is {n_folds}; it must be at least 2")
    folds = []
    for k in range(n_folds):
        train: dict[str, list[list[int]]] = {}
        test: dict[str, list[list[int]]] = {}
        for w in sorted(n_frames):
            n = n_frames[w]
            start, stop = k * n // n_folds, (k + 1) * n // n_folds
            gap = int(round(gap_s * fps[w]))
            segments = [[0, start - gap], [stop + gap, n]]
            train[str(w)] = [s for s in segments if s[1] > s[0]]
            test[str(w)] = [[start, stop]]
            if not train[str(w)] or stop <= start:
                raise ValueError(
                    f"worm {w}: {n} frames leave no training data in within fold {k} with a "
                    f"{gap_s} s gap; lower folds.within.gap_s or n_folds"
                )
        folds.append(
            {
                "fold": k,
                "test_worms": sorted(n_frames),
                "train_worms": sorted(n_frames),
                "train": train,
                "test": test,
                "gap_frames": {str(w): int(round(gap_s * fps[w])) for w in fps},
            }
        )
    return folds


def lodo_folds(n_frames: dict[int, int], member: dict[int, str]) -> list[dict[str, Any]]:
    """One fold per member of a pool: test on every worm of that member, train on the
    worms of the others."""
    members = list(dict.fromkeys(member[w] for w in sorted(n_frames)))
    if len(members) < 2:
        raise ValueError(f"lodo needs a pool of at least 2 members; this one has {members}")
    folds = []
    for k, held_out in enumerate(members):
        test = [w for w in sorted(n_frames) if member[w] == held_out]
        train = [w for w in sorted(n_frames) if member[w] != held_out]
        folds.append(
            {
                "fold": k,
                "test_member": held_out,
                "test_worms": test,
                "train_worms": train,
                "train": {str(w): [[0, n_frames[w]]] for w in train},
                "test": {str(w): [[0, n_frames[w]]] for w in test},
            }
        )
    return folds


def plan(h5: h5py.File, labels_summary: dict[str, Any] | None) -> dict[str, Any]:
    """What the dataset can support, for the workflow to plan by: behaviour needs labels
    on every worm, the `shared` node set needs a neuron named in every worm."""
    shared = files.read_strings(h5["shared_neurons"])
    result: dict[str, Any] = {"n_shared_neurons": len(shared), "behaviour": True}
    if labels_summary is not None and not labels_summary.get("has_behaviour", True):
        without = labels_summary["worms_without_behaviour"]
        result["behaviour"] = False
        result["behaviour_reason"] = f"worms {without} have no behaviour in their files"
    if "members" not in h5.attrs:
        result["lodo_reason"] = "lodo holds out one member of a pool; this is not a pool"
    return result


def run(
    traces_path: Path,
    n_folds: int,
    gap_s: float,
    out: Path,
    labels_summary: Path | None = None,
) -> dict[str, Any]:
    with h5py.File(traces_path, "r") as h5:
        dataset = str(h5.attrs["dataset"])
        n_frames = {int(k): int(g["time"].shape[0]) for k, g in h5["worms"].items()}
        fps = {int(k): float(g.attrs["fps"]) for k, g in h5["worms"].items()}
        member = {int(k): str(g.attrs.get("member", "")) for k, g in h5["worms"].items()}
        what = plan(h5, files.read_json(labels_summary) if labels_summary else None)
    result = {
        "dataset": dataset,
        "n_worms": len(n_frames),
        "n_frames": {str(w): n for w, n in sorted(n_frames.items())},
        "plan": what,
        "lowo": lowo_folds(n_frames),
        "within": within_folds(n_frames, fps, n_folds, gap_s),
        "within_gap_s": gap_s,
    }
    if "lodo_reason" not in what:
        result["lodo"] = lodo_folds(n_frames, member)
    files.write_json(out, result)
    log.info(
        "%s: %d lowo folds, %d within folds (gap %.1f s), %d lodo folds; %s",
        dataset,
        len(result["lowo"]),
        len(result["within"]),
        gap_s,
        len(result.get("lodo", [])),
        what,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.make_folds", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--traces", type=Path, required=True, help="preprocessed traces.h5")
    parser.add_argument("--within-folds", type=int, default=5, help="temporal blocks per worm")
    parser.add_argument("--gap-s", type=float, default=30.0, help="gap between train and test (s)")
    parser.add_argument(
        "--labels-summary", type=Path, default=None, help="labels/summary.json (behaviour?)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folds.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        run(args.traces, args.within_folds, args.gap_s, args.out, args.labels_summary)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
