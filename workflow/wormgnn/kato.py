"""Load Kato et al. 2015 whole-brain recordings (both OSF schemas) into one form.

The OSF files are MATLAB v7.3 structs named after the file (``WT_NoStim``, ``WT_Stim``,
``AVA_HisCl``, or ``NoStim_Data`` for a copy), with one cell per worm in every field.

- **New schema** (current ``WT_NoStim.mat``): ``deltaFOverF_bc`` (bleach-corrected ΔF/F),
  ``deltaFOverF``, ``NeuronNames`` (a name or the ROI's 1-based index per ROI), ``States``
  (a struct of eight one-hot vectors), ``tv``, ``fps``, ``dataset``.
- **Old schema** (``WT_Stim.mat``, ``AVA_HisCl.mat``, older ``WT_NoStim.mat``): ``traces``
  (bleach-corrected ΔF/F), ``traces_raw`` (raw fluorescence), ``IDs`` (zero or more
  candidate names per ROI), ``States`` (1-based integer codes), ``timeVectorSeconds``
  (``timVectorSeconds`` in the old WT_NoStim), ``fps``, ``dataset``, maybe ``States_key``.

Every reader error is a :class:`KatoFormatError` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wormgnn import matfile
from wormgnn.sources import Recording, SourceError

KNOWN_ROOTS = ("WT_NoStim", "WT_Stim", "AVA_HisCl", "NoStim_Data")

#: Old-schema 1-based state codes, from the dataset readme.
KATO8_CODES = ("FWD", "SLOW", "DT", "VT", "REV1", "REV2", "REVSUS", "NOSTATE")
STIM4_CODES = ("FWD", "REV", "REVSUS", "TURN")
_CODES_BY_ROOT = {"WT_NoStim": KATO8_CODES, "WT_Stim": STIM4_CODES, "AVA_HisCl": STIM4_CODES}

_NEW_TRACES = ("deltaFOverF_bc", "deltaFOverF")
_OLD_TIME = ("timeVectorSeconds", "timVectorSeconds")


class KatoFormatError(SourceError):
    """A file that is not a readable Kato 2015 recording; the message says why."""


def load_recordings(path: str | Path, root: str | None = None) -> list[Recording]:
    """Read every worm of a Kato 2015 ``.mat`` file.

    Args:
        path: the MATLAB v7.3 file.
        root: name of the root struct; by default the first of :data:`KNOWN_ROOTS`
            present in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise KatoFormatError(f"{path}: no such file")
    if not matfile.is_hdf5(path):
        what, advice = matfile.identify_non_hdf5(path)
        raise KatoFormatError(f"{path}: not a MATLAB v7.3 (HDF5) file: {what}. {advice}")
    try:
        with h5py.File(path, "r") as handle:
            return _Reader(path, handle, root).read()
    except KatoFormatError:
        raise
    except (OSError, KeyError, RuntimeError) as err:
        raise KatoFormatError(
            f"{path}: the HDF5 structure is damaged ({err}); the file is probably "
            "truncated. Download it again."
        ) from err


class _Reader:
    def __init__(self, path: Path, handle: h5py.File, root: str | None) -> None:
        self.path = path
        self.handle = handle
        self.root_name = self._find_root(root)
        self.root = handle[self.root_name]
        self.fields = set(self.root.keys())
        self.schema = "new" if "NeuronNames" in self.fields else "old"

    def _find_root(self, root: str | None) -> str:
        names = [k for k in self.handle.keys() if k != "#refs#"]
        wanted = [root] if root else list(KNOWN_ROOTS)
        for name in wanted:
            if name in names and isinstance(self.handle[name], h5py.Group):
                return name
        raise KatoFormatError(
            f"{self.path}: no root struct named {' or '.join(wanted)}; the file has "
            f"{names or 'nothing'} at the top level. Set `root:` for this dataset in "
            "config.yaml if the struct has another name."
        )

    def _error(self, field: str, what: str) -> KatoFormatError:
        return KatoFormatError(f"{self.path}: field {self.root_name}.{field} {what}")

    def _require(self, *alternatives: str) -> str:
        for name in alternatives:
            if name in self.fields:
                return name
        raise self._error(
            " or ".join(alternatives),
            f"is missing ({self.schema} schema; fields present: {sorted(self.fields)})",
        )

    def _n_worms(self, field: str) -> int:
        node = self.root[field]
        if matfile.matlab_class(node) == "cell":
            return int(np.prod(node.shape))
        return 1

    def _value(self, field: str, worm: int) -> Any:
        node = self.root[field]
        if matfile.matlab_class(node) != "cell":
            return matfile.decode(node)
        ref = node[()].ravel()[worm]
        return matfile.decode(self.handle[ref])

    def read(self) -> list[Recording]:
        names_field = self._require("NeuronNames" if self.schema == "new" else "IDs")
        self._require("States")
        self._require("fps")
        traces_field = self._require(*_NEW_TRACES) if self.schema == "new" else None
        if self.schema == "old":
            self._require("traces", "traces_raw")
        n_worms = self._n_worms(names_field)
        return [self._read_worm(w, names_field, traces_field) for w in range(n_worms)]

    def _matrix(self, field: str, worm: int, n_rois: int) -> np.ndarray:
        data = np.asarray(self._value(field, worm), dtype=np.float64)
        if data.ndim != 2:
            raise self._error(field, f"of worm {worm} is not a T x N matrix ({data.shape})")
        if data.shape[1] != n_rois and data.shape[0] == n_rois:
            data = data.T
        if data.shape[1] != n_rois:
            raise self._error(
                field, f"of worm {worm} has shape {data.shape}, but there are {n_rois} ROIs"
            )
        return data

    def _read_worm(self, worm: int, names_field: str, traces_field: str | None) -> Recording:
        roi_names = [_candidates(c) for c in self._value(names_field, worm)]
        n_rois = len(roi_names)
        if self.schema == "new":
            dff, raw = self._matrix(traces_field, worm, n_rois), None
        else:
            dff = self._matrix("traces", worm, n_rois) if "traces" in self.fields else None
            raw = self._matrix("traces_raw", worm, n_rois) if "traces_raw" in self.fields else None
        n_frames = (dff if dff is not None else raw).shape[0]
        fps = float(np.asarray(self._value("fps", worm)).ravel()[0])
        if not np.isfinite(fps) or fps <= 0:
            raise self._error("fps", f"of worm {worm} is {fps}; it must be a positive rate")
        time = self._time(worm, n_frames, fps)
        states, state_names = self._states(worm, n_frames)
        description = ""
        if "dataset" in self.fields:
            value = self._value("dataset", worm)
            description = value if isinstance(value, str) else ""
        return Recording(
            worm=worm,
            description=description,
            fps=fps,
            time=time,
            dff=dff,
            raw=raw,
            roi_names=roi_names,
            states=states,
            state_names=state_names,
            source_file=str(self.path),
            trace_path=", ".join(
                f"{self.root_name}.{f}"
                for f in ([traces_field] if traces_field else ["traces", "traces_raw"])
                if f in self.fields
            ),
            behaviour=f"{self.root_name}.States",
        )

    def _time(self, worm: int, n_frames: int, fps: float) -> np.ndarray:
        candidates = ("tv",) if self.schema == "new" else _OLD_TIME
        field = next((f for f in candidates if f in self.fields), None)
        if field is None:
            return np.arange(n_frames) / fps
        time = np.asarray(self._value(field, worm), dtype=np.float64).ravel()
        if time.shape[0] != n_frames:
            raise self._error(
                field, f"of worm {worm} has {time.shape[0]} times for {n_frames} frames"
            )
        return time

    def _states(self, worm: int, n_frames: int) -> tuple[np.ndarray, list[str]]:
        value = self._value("States", worm)
        if isinstance(value, dict):  # new schema: one-hot vector per state
            names = [canonical_state(k) for k in value]
            onehot = np.stack([np.asarray(v).ravel() for v in value.values()], axis=1)
            if onehot.shape[0] != n_frames:
                raise self._error(
                    "States", f"of worm {worm} has {onehot.shape[0]} frames, traces {n_frames}"
                )
            states = np.where(onehot.sum(axis=1) > 0, onehot.argmax(axis=1), -1)
            return states.astype(np.int16), names
        codes = np.asarray(value, dtype=np.float64).ravel()
        if codes.shape[0] != n_frames:
            raise self._error(
                "States", f"of worm {worm} has {codes.shape[0]} frames, traces {n_frames}"
            )
        names = self._code_names(worm, codes)
        valid = np.isfinite(codes) & (codes >= 1) & (codes <= len(names))
        states = np.where(valid, np.nan_to_num(codes) - 1, -1).astype(np.int16)
        return states, names

    def _code_names(self, worm: int, codes: np.ndarray) -> list[str]:
        if "States_key" in self.fields:
            key = self._value("States_key", worm)
            if isinstance(key, list) and all(isinstance(k, str) for k in key):
                return [canonical_state(k) for k in key]
            if isinstance(key, dict):
                by_code = {int(np.asarray(v).ravel()[0]): k for k, v in key.items()}
                return [
                    canonical_state(by_code.get(i, "NOSTATE")) for i in range(1, max(by_code) + 1)
                ]
            raise self._error(
                "States_key", "is neither a cell of state names nor a struct of codes"
            )
        if self.root_name in _CODES_BY_ROOT:
            return list(_CODES_BY_ROOT[self.root_name])
        finite = codes[np.isfinite(codes)]
        return list(KATO8_CODES if finite.size and finite.max() > 4 else STIM4_CODES)


def _candidates(value: Any) -> list[str]:
    """Candidate names of one ROI: a char array, or a (possibly empty) cell of them."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for item in value for v in _candidates(item)]
    return []  # an empty numeric placeholder


_STATE_ALIASES = {"FORWARD": "FWD", "REVERSAL": "REV", "REVERSE": "REV", "NONE": "NOSTATE"}


def canonical_state(name: str) -> str:
    """Upper-case state name with common aliases folded (``fwd`` → ``FWD``)."""
    text = name.strip().upper().replace(" ", "").replace("_", "")
    return _STATE_ALIASES.get(text, text)
