"""Small I/O helpers shared by every stage: atomic writes, JSON, HDF5 strings, logging."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

log = logging.getLogger("wormgnn")


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.
    ``suffix`` ends the temporary name (for writers that want an extension).

    An exception inside the block removes the temporary file, so an interrupted stage
    never leaves a half-written output under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=path.parent)
    # mkstemp creates the file 0600 whatever the umask; give it the mode of any new file,
    # so that group members can read results on a shared cluster when the umask allows.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256(path: str | Path) -> str:
    """sha256 of a file's content, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_strings(group: h5py.Group, name: str, values: Sequence[str]) -> None:
    """Store a list of strings as a UTF-8 variable-length string dataset."""
    group.create_dataset(name, data=list(values), dtype=h5py.string_dtype())


def read_strings(dataset: h5py.Dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dataset[()]]


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, which each Snakemake rule redirects to its ``log:`` file."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if "SLURM_JOB_ID" in os.environ:  # say where a cluster job ran, for the audit trail
        log.info(
            "SLURM_JOB_ID=%s on %s, GPUs allocated: %s",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURMD_NODENAME", "?"),
            os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS") or "none",
        )


def settings(cls: type, values: dict[str, Any] | None, section: str) -> Any:
    """Build the settings dataclass ``cls`` from a config block; unknown keys are errors
    that name the ``section`` of config.yaml."""
    values = dict(values or {})
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{section}: unknown setting(s) {sorted(unknown)}")
    return cls(**values)


def parse_json_arg(text: str, what: str) -> dict[str, Any]:
    """Decode a JSON object passed on the command line (rules pass config blocks so)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--{what}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise SystemExit(f"--{what}: expected a JSON object, got {type(value).__name__}")
    return value
