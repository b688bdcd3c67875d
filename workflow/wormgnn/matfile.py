"""Read and write the subset of MATLAB v7.3 (HDF5) that the Kato 2015 files use.

MATLAB v7.3 files are HDF5 files with a 512-byte user block holding a text header.
Each MATLAB value is an HDF5 object tagged by the attribute ``MATLAB_class``:

- numeric arrays (``double``, ``single``, ``int*``, ``uint*``, ``logical``) are datasets
  stored in the transposed (row-major) orientation, so a MATLAB ``T x N`` matrix reads
  as ``(N, T)`` in h5py;
- ``char`` arrays are ``uint16`` code units;
- ``cell`` arrays are datasets of object references into the group ``/#refs#``;
- ``struct`` scalars are groups, one member per field (``MATLAB_fields`` keeps the order);
- empty values are ``uint64`` shape vectors with ``MATLAB_empty = 1``.

The writer exists so that the synthetic worm is a file in exactly the OSF layout, and so
that tests can build small files in both Kato schemas without MATLAB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

_NUMERIC_CLASSES = {
    "double",
    "single",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
}

#: Fixed header text, without a creation date, so that equal inputs give equal files.
_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: wormgnn, HDF5 schema 1.00 ."


# --------------------------------------------------------------------------- reading
def decode(node: h5py.Dataset | h5py.Group, *, transpose: bool = True) -> Any:
    """Decode one MATLAB value from an open h5py object.

    Numeric arrays come back as NumPy arrays in MATLAB orientation (``T x N`` stays
    ``T x N``) when ``transpose`` is true; cells as flat Python lists in MATLAB's
    column-major order; structs as dicts; chars as ``str``.
    """
    mclass = matlab_class(node)
    if isinstance(node, h5py.Group):
        return {key: decode(node[key], transpose=transpose) for key in node}
    if node.attrs.get("MATLAB_empty", 0):
        return "" if mclass == "char" else ([] if mclass == "cell" else np.zeros((0, 0)))
    if mclass == "cell":
        # h5py holds the reversed dimensions, so a C-order ravel is MATLAB's
        # column-major linear indexing of the cell.
        return [decode(node.file[ref], transpose=transpose) for ref in node[()].ravel()]
    if mclass == "char":
        codes = np.asarray(node[()]).ravel()
        return "".join(map(chr, codes))
    data = np.asarray(node[()])
    if mclass == "logical":
        data = data.astype(bool)
    return data.T if transpose else data


def matlab_class(node: h5py.HLObject) -> str:
    """The ``MATLAB_class`` tag of an object (``""`` when untagged)."""
    return _attr_str(node, "MATLAB_class")


def _attr_str(node: h5py.HLObject, name: str) -> str:
    value = node.attrs.get(name, b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def struct_fields(group: h5py.Group) -> list[str]:
    """Field names of a MATLAB struct group, in MATLAB order when recorded."""
    fields = group.attrs.get("MATLAB_fields")
    if fields is None:
        return list(group.keys())
    return [b"".join(np.asarray(f).tolist()).decode() for f in fields]


def is_hdf5(path: str | Path) -> bool:
    return h5py.is_hdf5(str(path))


def identify_non_hdf5(path: str | Path, kind: str = ".mat") -> tuple[str, str]:
    """(what a file that is not HDF5 looks like, what to do about it), from its first
    bytes: a MATLAB v5 file, a cut-off v7.3 file, an archive, text or an HTML page.
    ``kind`` names the file the user meant (``.mat``, ``NWB``) in the advice."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "it is empty (0 bytes)", "Copy or download it again."
    if head.startswith(b"MATLAB 5.0 MAT-file"):
        return (
            "it is a MATLAB v5 MAT-file (saved without -v7.3)",
            "Re-save it as v7.3: in MATLAB, load it and save(file, ..., '-v7.3'). "
            "The Kato 2015 OSF files are v7.3.",
        )
    if head.startswith(b"MATLAB 7.3 MAT-file"):
        return (
            "it has a MATLAB v7.3 header but its HDF5 data is cut off or damaged",
            "A partial download or copy looks like this: download or copy it again.",
        )
    archives = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive"}
    for magic, kind in archives.items():
        if head.startswith(magic):
            return f"it is {kind}", f"Extract the {kind} file from it and point to that."
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return (
            f"it is a binary file of another kind (first bytes {head[:8].hex(' ')})",
            f"Check that the path names the {kind} file you meant.",
        )
    start = " ".join(text.split())[:60]
    if "<html" in text.lower() or "<!doctype" in text.lower():
        return (
            f"it is an HTML page ({start!r}...)",
            "A failed or redirected download saves such a page: download it again.",
        )
    return (
        f"it is a text file beginning {start!r}",
        f"Check that the path names the {kind} file you meant.",
    )


# --------------------------------------------------------------------------- writing
class _Writer:
    def __init__(self, handle: h5py.File) -> None:
        self.file = handle
        self.refs = handle.require_group("#refs#")
        self.counter = 0

    def _ref_name(self) -> str:
        self.counter += 1
        return f"r{self.counter}"

    def write(self, parent: h5py.Group, name: str, value: Any) -> h5py.HLObject:
        if isinstance(value, dict):
            group = parent.create_group(name)
            group.attrs["MATLAB_class"] = np.bytes_(b"struct")
            vlen = h5py.vlen_dtype(np.dtype("S1"))
            names = np.empty(len(value), dtype=object)
            for i, key in enumerate(value):
                names[i] = np.frombuffer(key.encode(), dtype="S1")
                self.write(group, key, value[key])
            group.attrs.create("MATLAB_fields", names, dtype=vlen)
            return group
        if isinstance(value, str):
            return self._write_char(parent, name, value)
        if isinstance(value, list | tuple):
            return self._write_cell(parent, name, list(value))
        return self._write_numeric(parent, name, np.asarray(value))

    def _write_empty(self, parent: h5py.Group, name: str, mclass: str) -> h5py.Dataset:
        ds = parent.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
        ds.attrs["MATLAB_class"] = np.bytes_(mclass.encode())
        ds.attrs["MATLAB_empty"] = np.uint8(1)
        return ds

    def _write_char(self, parent: h5py.Group, name: str, text: str) -> h5py.Dataset:
        if not text:
            return self._write_empty(parent, name, "char")
        codes = np.array([ord(c) for c in text], dtype=np.uint16).reshape(-1, 1)
        ds = parent.create_dataset(name, data=codes)
        ds.attrs["MATLAB_class"] = np.bytes_(b"char")
        ds.attrs["MATLAB_int_decode"] = np.int64(2)
        return ds

    def _write_cell(self, parent: h5py.Group, name: str, items: list[Any]) -> h5py.Dataset:
        if not items:
            return self._write_empty(parent, name, "cell")
        refs = np.empty((len(items), 1), dtype=h5py.ref_dtype)  # MATLAB 1 x n cell
        for i, item in enumerate(items):
            refs[i, 0] = self.write(self.refs, self._ref_name(), item).ref
        ds = parent.create_dataset(name, data=refs)
        ds.attrs["MATLAB_class"] = np.bytes_(b"cell")
        return ds

    def _write_numeric(self, parent: h5py.Group, name: str, arr: np.ndarray) -> h5py.Dataset:
        if arr.dtype == bool:
            mclass, arr = "logical", arr.astype(np.uint8)
        elif arr.dtype.name in _NUMERIC_CLASSES:
            mclass = arr.dtype.name
        elif np.issubdtype(arr.dtype, np.floating):
            mclass, arr = "double", arr.astype(np.float64)
        else:
            raise TypeError(f"cannot write {arr.dtype} array {name!r} as a MATLAB value")
        if arr.ndim == 0:
            arr = arr.reshape(1, 1)
        elif arr.ndim == 1:
            arr = arr.reshape(-1, 1)  # MATLAB 1 x n row vector
        else:
            arr = arr.T
        ds = parent.create_dataset(name, data=arr)
        ds.attrs["MATLAB_class"] = np.bytes_(mclass.encode())
        return ds


def write_struct(path: str | Path, root: str, fields: dict[str, Any]) -> None:
    """Write ``fields`` as the MATLAB v7.3 struct ``root`` of a new file at ``path``.

    Values map to MATLAB as: ``dict`` → struct, ``list`` → cell, ``str`` → char,
    arrays → numeric (2-D arrays are given in MATLAB orientation, e.g. ``T x N``).
    Cells are written as 1 x n, as in the OSF files.
    """
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as handle:
        _Writer(handle).write(handle, root, fields)
    header = _HEADER.ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as raw:
        raw.write(header)
