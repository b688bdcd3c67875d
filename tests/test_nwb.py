"""NWB input: every layout variation of ../shared/NWB.md, built here from small arrays;
the real Flavell recordings; the round trip through wormgnn.export; bad files."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import MODULE, write_nwb
from wormgnn import align_labels, export, files, preprocess, simulate
from wormgnn.sources import SourceError, load
from wormgnn.sources.nwb import TRACE_PATHS, NWBOptions, velocity_states


def traces(n_frames=40, n_rois=4, seed=0):
    return 100.0 + np.random.default_rng(seed).normal(size=(n_frames, n_rois))


def preprocess_nwb(path, tmp_path):
    """Preprocess one NWB file to ``tmp_path/t.h5``; return the summary."""
    return preprocess.run(
        [path],
        "x",
        preprocess.PreprocessConfig(),
        tmp_path / "t.h5",
        tmp_path / "p.json",
        fmt="nwb",
    )


def label_nwb(path, tmp_path, scheme, label_neurons):
    """Labels of one preprocessed NWB file to ``tmp_path/l.h5``; return the summary."""
    return align_labels.run(
        [path],
        tmp_path / "t.h5",
        align_labels.Scheme.named(scheme),
        label_neurons,
        True,
        tmp_path / "l.h5",
        tmp_path / "l.json",
        fmt="nwb",
    )


def read_one(path: Path, **options):
    (rec,) = load("nwb", [path], options)
    return rec


def test_dff_is_preferred_to_raw_and_the_path_is_recorded(tmp_path):
    path = write_nwb(tmp_path / "a.nwb", traces())
    with h5py.File(path, "a") as h5:
        dff = h5.create_group(f"{MODULE}/SignalDFoF")
        dff.attrs["neurodata_type"] = "DfOverF"
        s = dff.create_group("SignalCalciumImResponseSeries")
        s.create_dataset("data", data=np.zeros((40, 4), np.float32))
        s.create_dataset("starting_time", data=0.0).attrs["rate"] = 2.0
    rec = read_one(path)
    assert rec.trace_path == f"{MODULE}/SignalDFoF/SignalCalciumImResponseSeries"
    assert rec.dff is not None and rec.raw is None


def test_raw_fluorescence_goes_through_the_baseline(tmp_path):
    rec = read_one(write_nwb(tmp_path / "a.nwb", traces()))
    assert rec.raw is not None and rec.dff is None
    out = preprocess.preprocess_recording(rec, preprocess.PreprocessConfig(zscore=False))
    assert out.source == "raw"
    assert abs(np.median(out.traces[..., 0])) < 0.05  # ΔF/F around the baseline, not ~100


def test_series_directly_under_the_module_and_an_override(tmp_path):
    rec = read_one(write_nwb(tmp_path / "a.nwb", traces(), container=None))
    assert rec.trace_path == f"{MODULE}/SignalCalciumImResponseSeries"
    odd = write_nwb(tmp_path / "b.nwb", traces(), container="Mine", container_type="DfOverF")
    with pytest.raises(SourceError, match="no calcium series found; tried"):
        read_one(odd)
    rec = read_one(odd, series=f"{MODULE}/Mine/SignalCalciumImResponseSeries")
    assert rec.dff is not None  # the container's type says ΔF/F


def test_rate_and_timestamps(tmp_path):
    rec = read_one(write_nwb(tmp_path / "a.nwb", traces(), rate=4.0))
    assert rec.fps == pytest.approx(4.0) and rec.time[-1] == pytest.approx(39 / 4.0)
    uneven = np.cumsum(np.r_[0.0, np.random.default_rng(1).uniform(0.6, 0.9, 39)])
    rec = read_one(write_nwb(tmp_path / "b.nwb", traces(), timestamps=uneven))
    np.testing.assert_array_equal(rec.time, uneven)
    out = preprocess.preprocess_recording(rec, preprocess.PreprocessConfig(target_fps=1.0))
    assert np.allclose(np.diff(out.time), 1.0)  # resampled by time onto a regular grid


@pytest.mark.parametrize(("ragged", "neuron_ids"), [(False, False), (True, False), (False, True)])
def test_names_strings_ragged_uncertain_nan_and_numbers(tmp_path, ragged, neuron_ids):
    labels = ["AVAL", "RIMR?", "nan", "", "12", "VB02"]
    path = write_nwb(
        tmp_path / "a.nwb", traces(n_rois=6), labels=labels, ragged=ragged, neuron_ids=neuron_ids
    )
    out = preprocess.preprocess_recording(read_one(path), preprocess.PreprocessConfig())
    assert out.names == ["AVAL", "", "", "", "", "VB2"]
    kept = read_one(path, uncertain_names="keep")
    assert preprocess.preprocess_recording(kept, preprocess.PreprocessConfig()).names[1] == "RIMR"


def test_duplicate_names_become_unnamed_with_a_warning(tmp_path, caplog):
    path = write_nwb(tmp_path / "a.nwb", traces(n_rois=3), labels=["AVAL", "AVAL", "AVAR"])
    rec = read_one(path)
    assert rec.roi_names == [[], [], ["AVAR"]]
    assert "AVAL" in caplog.text and "more than one ROI" in caplog.text


def test_nan_frames_and_all_nan_columns(tmp_path):
    data = traces(n_rois=3)
    data[5:8, :] = np.nan  # frames lost in every ROI
    data[:, 2] = np.nan  # an ROI never tracked
    rec = read_one(write_nwb(tmp_path / "a.nwb", data, labels=["AVAL", "AVAR", "RIML"]))
    out = preprocess.preprocess_recording(rec, preprocess.PreprocessConfig())
    assert out.nan_filled == 6 and out.dropped_rois == [2] and out.names == ["AVAL", "AVAR"]
    assert np.isfinite(out.traces).all()


def test_reversal_bouts_are_1_based_and_inclusive(tmp_path):
    rec = read_one(write_nwb(tmp_path / "a.nwb", traces(), bouts=np.array([[3, 5], [40, 40]])))
    assert rec.state_names == ["FWD", "REV"]
    assert np.flatnonzero(rec.states == 1).tolist() == [2, 3, 4, 39]
    assert "2 bouts" in rec.behaviour


def test_velocity_rule_when_there_are_no_bouts(tmp_path):
    v = np.full(40, 0.1)
    v[10:16] = -0.1  # 6 frames = 3 s at 2 Hz: a reversal
    v[20] = -0.1  # 0.5 s: too short
    v[30] = np.nan
    rec = read_one(write_nwb(tmp_path / "a.nwb", traces(), velocity=v))
    assert np.flatnonzero(rec.states == 1).tolist() == list(range(10, 16))
    assert rec.states[30] == -1 and rec.states[20] == 0
    assert velocity_states(np.array([-1.0, -1.0]), np.array([0.0, 0.5]), 0.0, 1.0).tolist() == [
        1,
        1,
    ]


def test_a_recording_without_behaviour_serves_forecasting_only(tmp_path):
    path = write_nwb(tmp_path / "a.nwb", traces(), labels=["AVAL", "B", "C", "D"])
    rec = read_one(path)
    assert not rec.has_behaviour and (rec.states == -1).all()
    pre = preprocess_nwb(path, tmp_path)
    assert pre["worms"][0]["file"] == "a.nwb"
    summary = label_nwb(path, tmp_path, "kato4", ["AVA"])
    assert summary["has_behaviour"] is False and summary["worms_without_behaviour"] == [0]


def test_a_scheme_with_turns_is_refused_for_bouts(tmp_path):
    path = write_nwb(tmp_path / "a.nwb", traces(), bouts=np.array([[3, 5]]))
    preprocess_nwb(path, tmp_path)
    with pytest.raises(ValueError, match=r"classes \['turn'\].*use fwdrev"):
        label_nwb(path, tmp_path, "kato4", [])
    assert not (tmp_path / "l.h5").exists()
    s = label_nwb(path, tmp_path, "fwdrev", [])
    assert s["classes"] == ["forward", "reversal"] and s["worms"][0]["class_counts"]["reversal"] > 0


# --------------------------------------------------------------------------- bad input
def test_no_series_lists_the_paths_tried(tmp_path):
    path = tmp_path / "empty.nwb"
    with h5py.File(path, "w") as h5:
        h5.create_group("processing/Behavior")
    with pytest.raises(SourceError) as err:
        read_one(path)
    assert str(path) in str(err.value)
    assert all(p in str(err.value) for p in TRACE_PATHS)


def test_names_and_traces_of_different_lengths(tmp_path):
    path = write_nwb(tmp_path / "a.nwb", traces(n_rois=4), labels=["AVAL", "AVAR", "RIML"])
    with pytest.raises(SourceError, match=r"a\.nwb.*3 names for 4 trace columns"):
        read_one(path)


def test_not_hdf5_and_truncated(tmp_path):
    text = tmp_path / "notes.nwb"
    text.write_text("not an NWB file")
    with pytest.raises(SourceError, match=r"notes\.nwb: not an NWB \(HDF5\) file: it is a text"):
        read_one(text)
    good = write_nwb(tmp_path / "good.nwb", traces(400, 50))
    cut = tmp_path / "cut.nwb"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SourceError, match=r"cut\.nwb.*(truncated|damaged)"):
        read_one(cut)


def test_preprocess_of_a_bad_file_writes_nothing(tmp_path):
    bad = tmp_path / "bad.nwb"
    bad.write_text("<html>oops</html>")
    with pytest.raises(SourceError):
        preprocess.run(
            [bad],
            "x",
            preprocess.PreprocessConfig(),
            tmp_path / "t.h5",
            tmp_path / "s.json",
            fmt="nwb",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nwb"]


# --------------------------------------------------------------------------- round trip
def test_synthetic_worm_round_trip_through_nwb(tmp_path):
    """Exported to NWB and read back, the synthetic worm preprocesses and labels exactly
    as its .mat form (traces to float32 precision)."""
    from conftest import TINY_SYNTHETIC

    mat = tmp_path / "tiny.mat"
    simulate.run(simulate.SyntheticConfig.from_dict(TINY_SYNTHETIC), "tiny", mat, tmp_path / "t.h5")
    manifest = export.run([mat], "tiny", tmp_path / "nwb", tmp_path / "nwb" / "manifest.json")
    assert [f["file"] for f in manifest["files"]] == [f"sub-tiny-0{i}_ophys.nwb" for i in range(3)]
    cfg = preprocess.PreprocessConfig(baseline_window_s=60.0)
    forms = {"mat": ([mat], "kato"), "nwb": ([tmp_path / "nwb" / "manifest.json"], "nwb")}
    for name, (raw, fmt) in forms.items():
        preprocess.run(
            raw, "tiny", cfg, tmp_path / f"{name}.h5", tmp_path / f"{name}.json", fmt=fmt
        )
        for scheme in ("kato4", "fwdrev"):
            align_labels.run(
                raw,
                tmp_path / f"{name}.h5",
                align_labels.Scheme.named(scheme),
                ["AVA"],
                True,
                tmp_path / f"{name}-{scheme}.h5",
                tmp_path / f"{name}-{scheme}.json",
                fmt=fmt,
            )
    with h5py.File(tmp_path / "mat.h5") as a, h5py.File(tmp_path / "nwb.h5") as b:
        for w in a["worms"]:
            np.testing.assert_allclose(
                a[f"worms/{w}/traces"][()], b[f"worms/{w}/traces"][()], atol=1e-4
            )
            assert files.read_strings(a[f"worms/{w}/names"]) == files.read_strings(
                b[f"worms/{w}/names"]
            )
    for scheme in ("kato4", "fwdrev"):
        with (
            h5py.File(tmp_path / f"mat-{scheme}.h5") as a,
            h5py.File(tmp_path / f"nwb-{scheme}.h5") as b,
        ):
            for w in a["worms"]:
                np.testing.assert_array_equal(
                    a[f"worms/{w}/labels"][()], b[f"worms/{w}/labels"][()]
                )
                assert (a[f"worms/{w}/labels"][()] >= 0).sum() > 100


def test_export_is_valid_nwb(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    mat = tmp_path / "tiny.mat"
    simulate.run(
        simulate.SyntheticConfig.from_dict(
            {
                "seed": 3,
                "n_worms": 2,
                "duration_s": 60.0,
                "n_neurons": 30,
                "rois_per_worm": [10, 12],
                "n_core": 5,
            }
        ),
        "t",
        mat,
        tmp_path / "t.h5",
    )
    manifest = export.run([mat], "t", tmp_path / "nwb", tmp_path / "m.json")
    with pynwb.NWBHDF5IO(str(tmp_path / "nwb" / manifest["files"][0]["file"]), "r") as io:
        nwb = io.read()
        series = nwb.processing["CalciumActivity"]["SignalRawFluor"][
            "SignalCalciumImResponseSeries"
        ]
        assert series.data.shape[1] == len(series.rois.table["ID_labels"].data)
        assert len(nwb.intervals["behaviour_states"]) > 0


# --------------------------------------------------------------------------- real files
@pytest.mark.realdata
def test_real_flavell_recordings_match_their_readme(flavell_dir):
    recs = load("nwb", [flavell_dir])
    assert [r.description for r in recs] == [
        "sub-2022-01-16-01_ophys.nwb",
        "sub-2022-05-02-01_ophys.nwb",
    ]
    assert [r.n_frames for r in recs] == [799, 1137]
    assert [r.n_rois for r in recs] == [130, 136]
    assert recs[0].fps == pytest.approx(1.36, abs=0.01) and recs[1].fps == pytest.approx(
        1.667, abs=1e-3
    )
    assert [round(float((r.states == 1).mean()) * 100, 1) for r in recs] == [16.9, 28.0]
    assert ["38 bouts" in recs[0].behaviour, "53 bouts" in recs[1].behaviour] == [True, True]
    assert all(r.raw is not None for r in recs)
    assert all(not any(n) for r in recs for n in r.roi_names)  # no neuron is identified


@pytest.mark.realdata
def test_velocity_rule_agrees_with_the_real_reversal_bouts(flavell_dir):
    """The documented velocity rule (0.005 mm/s, 1 s) against the lab's own bouts."""
    opts = NWBOptions()
    for path in sorted(flavell_dir.glob("*.nwb")):
        bouts = load("nwb", [path])[0]
        with h5py.File(path) as h5:
            v = h5["processing/Behavior/velocity/velocity/data"][()]
        rule = velocity_states(v, bouts.time, opts.velocity_threshold, opts.min_reversal_s)
        assert (rule == bouts.states).mean() > 0.995
