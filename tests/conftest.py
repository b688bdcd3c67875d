"""Shared fixtures: the real recordings, tiny synthetic configs, an NWB writer, a snakemake
runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from wormgnn import matfile

REPO = Path(__file__).resolve().parents[1]
FLAVELL_ENV = "WORMGNN_FLAVELL_NWB"
KATO_ENV = "WORMGNN_KATO_FIXTURE"

#: A synthetic population small enough for a full pipeline run in seconds.
TINY_SYNTHETIC = {
    "seed": 7,
    "n_worms": 3,
    "duration_s": 150.0,
    "n_neurons": 40,
    "rois_per_worm": [24, 30],
    "n_core": 12,
}


@pytest.fixture(scope="session")
def kato_fixture() -> Path:
    """The real two-worm Kato 2015 file, located through WORMGNN_KATO_FIXTURE."""
    value = os.environ.get(KATO_ENV)
    if not value:
        pytest.skip(
            f"{KATO_ENV} is not set: point it at ../shared/data/kato2015/WT_NoStim_2worms.mat"
        )
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"{KATO_ENV}={value} does not exist")
    return path


@pytest.fixture(scope="session")
def flavell_dir() -> Path:
    """The two real Flavell NWB recordings, located through WORMGNN_FLAVELL_NWB."""
    value = os.environ.get(FLAVELL_ENV)
    if not value:
        pytest.skip(f"{FLAVELL_ENV} is not set: point it at ../shared/data/flavell2023_noid")
    path = Path(value)
    if len(list(path.glob("*.nwb"))) != 2:
        pytest.skip(f"{FLAVELL_ENV}={value} does not hold the two Flavell NWB files")
    return path


@pytest.fixture(scope="session")
def kato_npz(kato_fixture: Path) -> dict[str, np.ndarray]:
    npz = kato_fixture.with_name("WT_NoStim_states_names_5worms.npz")
    if not npz.is_file():
        pytest.skip(f"{npz} (state codes of the five worms) is missing beside the fixture")
    with np.load(npz, allow_pickle=False) as data:
        return dict(data)


def write_old_schema(
    path: Path,
    *,
    root: str = "WT_NoStim",
    n_frames: int = 200,
    fps: float = 3.0,
    ids: list[list[str]] | None = None,
    states: np.ndarray | None = None,
    time_field: str = "timeVectorSeconds",
    extra: dict | None = None,
    drop: tuple[str, ...] = (),
    seed: int = 0,
) -> dict:
    """Write a one-worm file in the old Kato schema; returns what was written."""
    rng = np.random.default_rng(seed)
    ids = ids if ids is not None else [["AVAL"], [], ["VB01"], ["OLQDR", "URYDR"], ["RIBR", "---"]]
    n = len(ids)
    raw = 500.0 + 50.0 * rng.random((n_frames, n))
    if states is None:
        states = np.repeat([1, 2, 5, 3, 1, 8, 7, 4], n_frames // 8 + 1)[:n_frames].astype(float)
    fields = {
        "IDs": [ids],
        "States": [np.asarray(states, dtype=float)],
        "dataset": ["test worm"],
        "fps": [np.float64(fps)],
        time_field: [np.arange(n_frames) / fps],
        "traces": [raw / 500.0 - 1.0],
        "traces_raw": [raw],
        **(extra or {}),
    }
    for key in drop:
        fields.pop(key)
    matfile.write_struct(path, root, fields)
    return fields


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_config(datasets: dict, **overrides) -> dict:
    """A complete config for ``datasets``; by default it stops before training
    (``experiment.models: []``) and trains without hyperparameter selection, so that a
    test runs only the stages it is about."""
    config = {
        "targets": {"datasets": list(datasets)},
        "datasets": datasets,
        "experiment": {"models": []},
        "selection": {"enabled": False},
    }
    config.update(overrides)
    return config


def tiny_study_config(models: list[str], seeds: list[int], n_worms: int = 3) -> dict:
    """A tiny forecast study, lowo, with selection on (budget 2) and one training epoch
    per run: linear over two penalties, every GNN over two widths."""
    return tiny_config(
        {"tiny": {"source": "synthetic", "synthetic": {**TINY_SYNTHETIC, "n_worms": n_worms}}},
        preprocess={"baseline_window_s": 60},
        experiment={
            "tasks": ["forecast"],
            "models": models,
            "protocols": ["lowo"],
            "seeds": seeds,
            "window": 8,
            "horizon": 2,
        },
        selection={"enabled": True, "budget": 2},
        training={"max_epochs": 1, "device": "cpu"},
        models={
            "linear": {"search": {"alpha": [1.0, 1000.0]}},
            **{m: {"message": 8, "search": {"hidden": [8, 16]}} for m in models if "gnn" in m},
        },
    )


def run_snakemake(
    workdir: Path,
    *args: str,
    configfile: Path | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with this interpreter's tools first
    on PATH, so that the rules' ``python -m wormgnn...`` use the test environment.
    Snakemake's stdout and stderr come back together in ``.stdout``. ``cwd`` (default:
    ``workdir``) is where relative paths in a profile resolve."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
    ]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += list(args)
    result = subprocess.run(
        cmd,
        cwd=cwd or workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout}")
    return result


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic dataset carried through preprocess, labels and folds."""
    from wormgnn import bench, preprocess, simulate

    root = tmp_path_factory.mktemp("tiny")
    synthetic = simulate.SyntheticConfig.from_dict({**TINY_SYNTHETIC, "duration_s": 240.0})
    pre = preprocess.PreprocessConfig(baseline_window_s=60.0)
    bench.build_dataset(root, "tiny", synthetic, pre, within_folds=2, gap_s=10.0)
    return {
        "root": root,
        "traces": root / "traces.h5",
        "labels": root / "labels.h5",
        "folds": root / "folds.json",
        "truth": root / "tiny.truth.h5",
        "mat": root / "tiny.mat",
    }


MODULE = "processing/CalciumActivity"


def write_nwb(
    path: Path,
    data: np.ndarray,
    *,
    container: str | None = "SignalRawFluor",
    container_type: str = "Fluorescence",
    rate: float | None = 2.0,
    timestamps: np.ndarray | None = None,
    labels: list[str] | None = None,
    ragged: bool = False,
    neuron_ids: bool = False,
    bouts: np.ndarray | None = None,
    velocity: np.ndarray | None = None,
) -> Path:
    """A file in the C. elegans NWB layout with what the arguments ask for."""
    with h5py.File(path, "w") as h5:
        h5.attrs["neurodata_type"] = "NWBFile"
        where = f"{MODULE}/{container}" if container else MODULE
        if container:
            h5.require_group(where).attrs["neurodata_type"] = container_type
        series = h5.create_group(f"{where}/SignalCalciumImResponseSeries")
        series.create_dataset("data", data=data.astype(np.float32))
        if timestamps is not None:
            series.create_dataset("timestamps", data=timestamps)
        elif rate is not None:
            start = series.create_dataset("starting_time", data=0.0)
            start.attrs["rate"] = rate
        if labels is not None and neuron_ids:
            h5.create_dataset(f"{MODULE}/NeuronIDs/labels", data=labels, dtype=h5py.string_dtype())
        elif labels is not None:
            table = h5.create_group(
                f"{MODULE}/CalciumSeriesSegmentation/Aligned_neuron_coordinates"
            )
            if ragged:
                chars = [c for label in labels for c in label]
                table.create_dataset("ID_labels", data=chars, dtype=h5py.string_dtype())
                table.create_dataset("ID_labels_index", data=np.cumsum([len(x) for x in labels]))
            else:
                table.create_dataset("ID_labels", data=labels, dtype=h5py.string_dtype())
            rois = series.create_dataset("rois", data=np.arange(len(labels)))
            rois.attrs["table"] = table.ref
        if bouts is not None:
            ev = h5.create_group("processing/Behavior/reversal_events/reversal_events")
            ev.create_dataset("data", data=bouts)
        if velocity is not None:
            v = h5.create_group("processing/Behavior/velocity/velocity")
            v.create_dataset("data", data=velocity)
            start = v.create_dataset("starting_time", data=0.0)
            start.attrs["rate"] = rate or 2.0
    return path
