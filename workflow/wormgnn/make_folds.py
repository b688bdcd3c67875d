"""Cross-validation folds: ``results/{dataset}/folds.json``.

- ``lowo`` (leave one worm out): fold *k* tests on worm *k* and trains on all others, so
  the test worm is never seen in training.
- ``within`` (per-worm temporal split): every worm's frames are cut into ``n_folds``
  contiguous blocks; fold *k* tests on block *k* of each worm and trains on what lies
  more than ``gap_s`` seconds away from it, so that autocorrelated frames next to the
  test block cannot leak into training.

Segments are half-open frame ranges ``[start, stop)`` on the preprocessed time grid.
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


def run(traces_path: Path, n_folds: int, gap_s: float, out: Path) -> dict[str, Any]:
    with h5py.File(traces_path, "r") as h5:
        dataset = str(h5.attrs["dataset"])
        n_frames = {int(k): int(g["time"].shape[0]) for k, g in h5["worms"].items()}
        fps = {int(k): float(g.attrs["fps"]) for k, g in h5["worms"].items()}
    result = {
        "dataset": dataset,
        "n_worms": len(n_frames),
        "n_frames": {str(w): n for w, n in sorted(n_frames.items())},
        "lowo": lowo_folds(n_frames),
        "within": within_folds(n_frames, fps, n_folds, gap_s),
        "within_gap_s": gap_s,
    }
    files.write_json(out, result)
    log.info(
        "%s: %d lowo folds, %d within folds (gap %.1f s)",
        dataset,
        len(result["lowo"]),
        len(result["within"]),
        gap_s,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.make_folds", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--traces", type=Path, required=True, help="preprocessed traces.h5")
    parser.add_argument("--within-folds", type=int, default=5, help="temporal blocks per worm")
    parser.add_argument("--gap-s", type=float, default=30.0, help="gap between train and test (s)")
    parser.add_argument("--out", type=Path, required=True, help="output folds.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        run(args.traces, args.within_folds, args.gap_s, args.out)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
