import h5py
import numpy as np
import pytest
from conftest import write_old_schema
from wormgnn import files, preprocess
from wormgnn.preprocess import PreprocessConfig
from wormgnn.sources import Recording


def test_dff_from_raw_removes_bleaching_and_recovers_transients():
    fps, t = 3.0, np.arange(3000) / 3.0
    rng = np.random.default_rng(0)
    spikes = (rng.random((3000, 4)) < 0.01).astype(float)
    kernel = np.exp(-np.arange(30) / (1.5 * fps))
    activity = np.stack([np.convolve(spikes[:, i], kernel)[:3000] for i in range(4)], axis=1)
    bleach = np.exp(-t / 600.0)[:, None]
    f0 = np.array([300.0, 500.0, 800.0, 1200.0])
    raw = f0 * (1 + 0.8 * activity) * bleach
    dff = preprocess.dff_from_raw(raw, fps, percentile=10, window_s=120)
    for i in range(4):
        assert np.corrcoef(dff[:, i], activity[:, i])[0, 1] > 0.95
    # no bleaching trend left: early and late quiet baselines agree
    assert abs(np.median(dff[:300]) - np.median(dff[-300:])) < 0.05
    assert abs(np.median(dff)) < 0.1


def test_dff_of_an_input_that_is_already_dff_subtracts_the_baseline():
    t = np.arange(900) / 3.0
    x = np.sin(t)[:, None] * 0.1 - 0.5 + t[:, None] * 1e-3  # negative values: not fluorescence
    out = preprocess.dff_from_raw(x, 3.0, 10, 60)
    assert np.isfinite(out).all() and abs(np.median(out[:100]) - np.median(out[-100:])) < 0.05


def test_fill_nan_gaps_interpolates_and_counts():
    t = np.arange(10.0)
    x = np.column_stack([np.arange(10.0), np.full(10, np.nan), np.ones(10)])
    x[3:5, 0] = np.nan
    x[0, 2] = np.nan
    filled, n, all_missing = preprocess.fill_nan_gaps(x, t)
    np.testing.assert_allclose(filled[:, 0], np.arange(10.0))
    assert filled[0, 2] == 1.0
    assert n == 3
    assert all_missing.tolist() == [False, True, False]


def test_resample_by_time():
    fps_in, f = 2.8, 0.1
    t = np.arange(2800) / fps_in
    x = np.sin(2 * np.pi * f * t)[:, None]
    y, grid = preprocess.resample(x, t, 3.0)
    assert np.allclose(np.diff(grid), 1 / 3.0)
    assert grid[-1] <= t[-1]
    np.testing.assert_allclose(y[:, 0], np.sin(2 * np.pi * f * grid), atol=0.02)
    # downsampling a 10 Hz signal: the anti-aliasing filter removes a 4 Hz component
    t10 = np.arange(3000) / 10.0
    fast = np.sin(2 * np.pi * 4.0 * t10)[:, None]
    y10, _ = preprocess.resample(fast, t10, 3.0)
    assert np.abs(y10).max() < 0.1


def test_zscore_and_derivative():
    t = np.arange(600) / 3.0
    x = np.column_stack([5 + 2 * np.sin(t), np.full(600, 3.0)])
    z = preprocess.zscore(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1)
    assert np.all(z[:, 1] == 0)
    d = preprocess.derivative(np.sin(0.3 * t)[:, None], 3.0, 2.0)  # per second
    np.testing.assert_allclose(d[10:-10, 0], 0.3 * np.cos(0.3 * t[10:-10]), atol=0.01)


def _recording(raw=None, dff=None, names=None, n=3, frames=600, fps=2.8):
    rng = np.random.default_rng(1)
    data = 400 + rng.random((frames, n)) * 40
    return Recording(
        worm=0,
        description="x",
        fps=fps,
        time=np.arange(frames) / fps,
        dff=dff if dff is not None else data / 400 - 1,
        raw=raw,
        roi_names=names or [["VB01"], ["OLQDR", "URYDR"], []],
        states=np.zeros(frames, dtype=np.int16),
        state_names=["FWD"],
    )


def test_preprocess_recording_channels_names_and_sources():
    rec = _recording(raw=400 + np.random.default_rng(2).random((600, 3)) * 40)
    out = preprocess.preprocess_recording(rec, PreprocessConfig())
    assert out.source == "raw"
    assert out.traces.shape == (int(np.floor(599 / 2.8 * 3.0)) + 1, 3, 2)
    assert out.traces.dtype == np.float32
    assert out.names == ["VB1", "", ""]
    np.testing.assert_allclose(out.traces[..., 0].mean(0), 0, atol=1e-5)
    corrected = preprocess.preprocess_recording(
        rec, PreprocessConfig(trace_source="corrected", target_fps=None, derivative=False)
    )
    assert corrected.source == "corrected" and corrected.traces.shape == (600, 3, 1)
    with pytest.raises(ValueError, match="trace_source is 'raw' but the file has no raw"):
        preprocess.preprocess_recording(_recording(), PreprocessConfig(trace_source="raw"))


def test_all_nan_roi_is_dropped_and_listed():
    dff = np.random.default_rng(0).random((300, 3))
    dff[:, 1] = np.nan
    dff[5:8, 2] = np.nan
    out = preprocess.preprocess_recording(_recording(dff=dff, frames=300), PreprocessConfig())
    assert out.dropped_rois == [1]
    assert out.roi_index.tolist() == [0, 2]
    assert out.nan_filled == 3
    assert np.isfinite(out.traces).all()


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="target_fsp"):
        PreprocessConfig.from_dict({"target_fsp": 3})


def test_run_writes_traces_and_summary(tmp_path):
    raw = tmp_path / "old.mat"
    write_old_schema(raw, n_frames=600, fps=2.5)
    summary = preprocess.run(raw, "toy", PreprocessConfig(), tmp_path / "t.h5", tmp_path / "s.json")
    assert summary == files.read_json(tmp_path / "s.json")
    (worm,) = summary["worms"]
    assert worm["n_rois"] == 5 and worm["n_frames_raw"] == 600 and worm["fps_raw"] == 2.5
    assert worm["fps"] == 3.0 and worm["n_frames"] == int(np.floor(599 / 2.5 * 3)) + 1
    assert worm["n_identified"] == 3  # AVAL, VB1, RIBR; one unidentified, one ambiguous
    assert worm["trace_source"] == "raw"
    assert summary["shared_neurons"] == ["AVAL", "RIBR", "VB1"]
    with h5py.File(tmp_path / "t.h5", "r") as h5:
        assert files.read_strings(h5["worms/0/names"]) == ["AVAL", "", "VB1", "", "RIBR"]
        assert h5["worms/0/traces"].shape == (worm["n_frames"], 5, 2)
        assert files.read_strings(h5["channels"]) == ["dff", "ddt"]


@pytest.mark.realdata
def test_real_fixture_summary(kato_fixture, tmp_path):
    s = preprocess.run(
        kato_fixture, "kato", PreprocessConfig(), tmp_path / "t.h5", tmp_path / "s.json"
    )
    assert [w["n_rois"] for w in s["worms"]] == [103, 121]
    assert [w["n_frames_raw"] for w in s["worms"]] == [3137, 3021]
    assert [w["trace_source"] for w in s["worms"]] == ["corrected", "corrected"]
    assert all(w["fps"] == 3.0 for w in s["worms"])
    assert s["n_shared_neurons"] == 21  # the 21 shared identified neurons of the two worms
    assert "VB2" in s["shared_neurons"] and "VB02" not in s["shared_neurons"]
