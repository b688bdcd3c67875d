"""Behaviour labels: behavioural states → class labels on the preprocessed frames.

The states are Kato's in a Kato file, and ``FWD``/``REV`` in another lab's NWB file
(:mod:`wormgnn.sources.nwb`). A worm whose file has no behaviour gets no labels (every
frame ``-1``); ``summary.json`` says so (``has_behaviour``), and the workflow then plans
no behaviour job for the dataset. A scheme with a class the recordings cannot show
(``kato4``'s turn for NWB reversal bouts) is an error.

States are aligned **by time**: each preprocessed frame takes the state of the raw frame
nearest in time, provided one lies within half a raw frame period (frames outside the
recorded span stay unlabelled). States then map to classes through a scheme:

- ``kato8``: Kato's states FWD, SLOW, DT, VT, REV1, REV2, REVSUS as seven classes; the
  eighth code, NOSTATE, is excluded.
- ``kato4``: forward (FWD+SLOW), reversal (REV1+REV2+REVSUS, and REV of the 4-state
  WT_Stim/AVA_HisCl files), turn (DT+VT, and TURN), NOSTATE excluded.
- ``fwdrev``: forward (FWD+SLOW) against reversal (REV1+REV2+REVSUS, REV), with the turns
  (DT, VT, TURN) excluded as well as NOSTATE: the two classes that labs without turn
  annotations share (the synthetic worm's states map the same way).
- any scheme defined under ``labels.schemes`` in ``config.yaml``.

Excluded frames get the label ``-1``. The neurons that define the labels (AVA, SMDV,
SMDD, RIB by default) are marked as not usable as behaviour inputs (``behaviour_input``).

``labels.h5`` layout::

    /classes                     (K,) class names
    /worms/<i>/labels            (T,) int8 class index, -1 = excluded
    /worms/<i>/state             (T,) int16 index into state_names, -1 = none
    /worms/<i>/state_names       the file's state names for this worm
    /worms/<i>/behaviour_input   (N,) bool, False for label-defining neurons
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wormgnn import files, sources
from wormgnn.names import matches_class
from wormgnn.preprocess import add_source_arguments
from wormgnn.schemes import (
    EXCLUDED_STATES,
    SCHEME_EXCLUDES,
    scheme_classes,
    unsupported_classes,
)
from wormgnn.sources import Recording

log = logging.getLogger("wormgnn.align_labels")

#: Neurons whose activity defined the labels in Kato et al. 2015 (config default).
LABEL_NEURONS = ("AVA", "SMDV", "SMDD", "RIB")


@dataclass
class Scheme:
    """Classes in order, each with the Kato states it pools."""

    name: str
    classes: dict[str, list[str]]
    excluded: tuple[str, ...] = EXCLUDED_STATES  # states labelled -1, not errors

    @classmethod
    def named(cls, name: str, custom: dict[str, dict[str, list[str]]] | None = None) -> Scheme:
        classes = scheme_classes(name, custom)
        excluded = EXCLUDED_STATES
        if name not in (custom or {}):
            excluded += SCHEME_EXCLUDES.get(name, ())
        return cls(name, {k: [s.upper() for s in v] for k, v in classes.items()}, excluded)

    def class_of_state(self) -> dict[str, int]:
        return {s: i for i, states in enumerate(self.classes.values()) for s in states}

    def map_states(self, states: np.ndarray, state_names: list[str], where: str) -> np.ndarray:
        """Class index per frame (-1 for excluded or unset frames)."""
        lookup = self.class_of_state()
        unknown = [s for s in state_names if s not in lookup and s not in self.excluded]
        present = set(np.unique(states[states >= 0]).tolist())
        unknown = [s for s in unknown if state_names.index(s) in present]
        if unknown:
            raise ValueError(
                f"{where}: states {unknown} are not covered by the label scheme "
                f"{self.name!r} (it maps {sorted(lookup)}); use kato4 or define a scheme "
                "under labels.schemes in config.yaml"
            )
        table = np.array([lookup.get(s, -1) for s in state_names] + [-1], dtype=np.int8)
        return table[states]  # index -1 (no state) picks the trailing -1


def align_by_time(raw_time: np.ndarray, raw_fps: float, time: np.ndarray) -> np.ndarray:
    """For each time in ``time``, the index of the nearest raw frame, or -1 if none lies
    within half a raw frame period."""
    right = np.clip(np.searchsorted(raw_time, time), 1, len(raw_time) - 1)
    left = right - 1
    nearest = np.where(time - raw_time[left] <= raw_time[right] - time, left, right)
    ok = np.abs(raw_time[nearest] - time) <= 0.5 / raw_fps + 1e-9
    return np.where(ok, nearest, -1)


def class_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(labels[labels >= 0], minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, counts, strict=True)}


def behaviour_input_mask(
    roi_names: list[str], label_neurons: list[str], exclude: bool
) -> np.ndarray:
    return np.array(
        [not (exclude and matches_class(n, label_neurons)) for n in roi_names], dtype=bool
    )


def check_scheme(scheme: Scheme, states: list[str], where: str) -> None:
    """A scheme must not have a class that the recordings can never show."""
    missing = unsupported_classes(states, scheme.classes)
    if missing:
        raise ValueError(
            f"{where}: label scheme {scheme.name!r} has classes {missing} that these "
            f"recordings cannot show (their states are {', '.join(states)}); use fwdrev "
            "(forward vs reversal), which every source supports"
        )


def write_worm_labels(
    out: h5py.File,
    key: str,
    scheme: Scheme,
    state: np.ndarray,
    state_names: list[str],
    worm: h5py.Group,
    label_neurons: list[str],
    exclude_label_neurons: bool,
    where: str,
) -> dict[str, Any]:
    """Write one worm's labels (its per-frame ``state`` through ``scheme``), states and
    input mask under ``/worms/<key>``; return its summary entry."""
    labels = scheme.map_states(state, state_names, where)
    roi_names = files.read_strings(worm["names"])
    mask = behaviour_input_mask(roi_names, label_neurons, exclude_label_neurons)
    g = out.create_group(f"worms/{key}")
    g.create_dataset("labels", data=labels)
    g.create_dataset("state", data=state)
    g.create_dataset("behaviour_input", data=mask)
    files.write_strings(g, "state_names", state_names)
    counts = class_counts(labels, list(scheme.classes))
    log.info("worm %s: %s, %d frames excluded", key, counts, int((labels < 0).sum()))
    return {
        "n_frames": int(labels.size),
        "class_counts": counts,
        "n_excluded": int((labels < 0).sum()),
        "excluded_input_neurons": [n for n, m in zip(roi_names, mask, strict=True) if not m],
    }


def labels_summary(
    dataset: str,
    scheme: Scheme,
    label_neurons: list[str],
    exclude_label_neurons: bool,
    worms: list[dict[str, Any]],
) -> dict[str, Any]:
    """``summary.json`` of a labels stage; ``worms`` entries say ``behaviour`` (falsy:
    none in the file)."""
    without = [w["worm"] for w in worms if not w["behaviour"]]
    if without:
        log.warning(
            "%s: worms %s have no behaviour in their files; they serve the forecast task only",
            dataset,
            without,
        )
    return {
        "dataset": dataset,
        "has_behaviour": not without,
        "worms_without_behaviour": without,
        "scheme": scheme.name,
        "classes": list(scheme.classes),
        "class_states": scheme.classes,
        "excluded_states": list(scheme.excluded),
        "label_neurons": label_neurons,
        "exclude_label_neurons": exclude_label_neurons,
        "worms": worms,
    }


def run(
    raw: Path | Sequence[Path],
    traces_path: Path,
    scheme: Scheme,
    label_neurons: list[str],
    exclude_label_neurons: bool,
    labels_out: Path,
    summary_out: Path,
    root: str | None = None,
    fmt: str = "kato",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Labels of every worm of the raw file(s) on the preprocessed frames of
    ``traces_path``. A worm without behaviour gets no labels (every frame ``-1``)."""
    raw_paths = [Path(raw)] if isinstance(raw, str | Path) else [Path(p) for p in raw]
    options = {**(options or {}), **({"root": root} if root else {})}
    loaded = sources.load(fmt, raw_paths, options)
    recordings: dict[int, Recording] = {r.worm: r for r in loaded}
    carried = list(dict.fromkeys(s for r in loaded for s in r.state_names))
    if carried:
        check_scheme(scheme, carried, ", ".join(map(str, raw_paths)))
    classes = list(scheme.classes)
    worms_summary = []
    with (
        h5py.File(traces_path, "r") as traces,
        files.atomic_path(labels_out) as tmp,
        h5py.File(tmp, "w") as out,
    ):
        dataset = str(traces.attrs["dataset"])
        out.attrs.update(dataset=dataset, scheme=scheme.name)
        files.write_strings(out, "classes", classes)
        for key in sorted(traces["worms"], key=int):
            worm = traces["worms"][key]
            rec = recordings[int(key)]
            where = f"{rec.source_file} worm {rec.worm}"
            raw_labels = scheme.map_states(rec.states, rec.state_names, where)
            index = align_by_time(rec.time, rec.fps, worm["time"][()])
            state = np.where(index >= 0, rec.states[index], -1).astype(np.int16)
            entry = write_worm_labels(
                out,
                key,
                scheme,
                state,
                rec.state_names,
                worm,
                label_neurons,
                exclude_label_neurons,
                where,
            )
            worms_summary.append(
                {
                    "worm": rec.worm,
                    "file": Path(rec.source_file).name,
                    "behaviour": rec.behaviour or None,
                    **entry,
                    "n_frames_raw": rec.n_frames,
                    "class_counts_raw": class_counts(raw_labels, classes),
                    "state_counts_raw": {
                        s: int((rec.states == i).sum()) for i, s in enumerate(rec.state_names)
                    },
                }
            )
    summary = labels_summary(dataset, scheme, label_neurons, exclude_label_neurons, worms_summary)
    files.write_json(summary_out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.align_labels", description=__doc__.split("\n")[0]
    )
    add_source_arguments(parser)
    parser.add_argument("--traces", type=Path, required=True, help="preprocessed traces.h5")
    parser.add_argument("--config", default="{}", help="the labels config block, as JSON")
    parser.add_argument("--labels", type=Path, required=True, help="output labels.h5")
    parser.add_argument("--summary", type=Path, required=True, help="output summary.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    cfg = files.parse_json_arg(args.config, "config")
    try:
        scheme = Scheme.named(cfg.get("scheme", "kato4"), cfg.get("schemes"))
        run(
            args.raw,
            args.traces,
            scheme,
            list(cfg.get("label_neurons", LABEL_NEURONS)),
            bool(cfg.get("exclude_label_neurons", True)),
            args.labels,
            args.summary,
            fmt=args.format,
            options=files.parse_json_arg(args.options, "options"),
        )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
