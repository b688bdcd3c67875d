import h5py
import numpy as np
import pytest
from conftest import write_old_schema
from wormgnn import align_labels, files, preprocess
from wormgnn.align_labels import Scheme, align_by_time
from wormgnn.preprocess import PreprocessConfig


def test_align_by_time_not_by_index():
    raw_time = np.arange(10) / 2.0  # 2 fps
    target = np.array([-1.0, 0.0, 0.24, 0.26, 2.0, 4.5, 4.74, 4.76])
    assert align_by_time(raw_time, 2.0, target).tolist() == [-1, 0, 0, 1, 4, 9, 9, -1]


def test_kato4_and_kato8_mapping():
    names = ["FWD", "SLOW", "DT", "VT", "REV1", "REV2", "REVSUS", "NOSTATE"]
    states = np.array([0, 1, 2, 3, 4, 5, 6, 7, -1], dtype=np.int16)
    kato4 = Scheme.named("kato4")
    assert list(kato4.classes) == ["forward", "reversal", "turn"]
    assert kato4.map_states(states, names, "x").tolist() == [0, 0, 2, 2, 1, 1, 1, -1, -1]
    kato8 = Scheme.named("kato8")
    assert kato8.map_states(states, names, "x").tolist() == [0, 1, 2, 3, 4, 5, 6, -1, -1]
    stim = ["FWD", "REV", "REVSUS", "TURN"]
    assert kato4.map_states(np.array([0, 1, 2, 3]), stim, "x").tolist() == [0, 1, 1, 2]
    with pytest.raises(ValueError, match=r"states \['REV', 'TURN'\] are not covered .* 'kato8'"):
        kato8.map_states(np.array([0, 1, 3]), stim, "file.mat worm 0")


def test_fwdrev_leaves_turns_out():
    names = ["FWD", "SLOW", "DT", "VT", "REV1", "REV2", "REVSUS", "NOSTATE"]
    states = np.array([0, 1, 2, 3, 4, 5, 6, 7, -1], dtype=np.int16)
    fwdrev = Scheme.named("fwdrev")
    assert list(fwdrev.classes) == ["forward", "reversal"]
    assert fwdrev.map_states(states, names, "x").tolist() == [0, 0, -1, -1, 1, 1, 1, -1, -1]
    stim = ["FWD", "REV", "REVSUS", "TURN"]  # the 4-state WT_Stim/AVA_HisCl codes
    assert fwdrev.map_states(np.array([0, 1, 2, 3]), stim, "x").tolist() == [0, 1, 1, -1]
    # the synthetic worm's states are Kato's: each maps to a class or is left out
    from wormgnn.simulate import STATE_DRIVE

    synthetic = list(STATE_DRIVE)
    mapped = fwdrev.map_states(np.arange(len(synthetic)), synthetic, "synthetic")
    assert {s for s, c in zip(synthetic, mapped, strict=True) if c < 0} == {"DT", "VT", "NOSTATE"}
    # a custom scheme of the same name excludes only NOSTATE, and says so for turns
    custom = Scheme.named("fwdrev", {"fwdrev": {"forward": ["FWD"], "reversal": ["REV1"]}})
    with pytest.raises(ValueError, match=r"states \['DT'\] are not covered"):
        custom.map_states(np.array([0, 1]), ["FWD", "DT"], "x")


def test_custom_scheme_and_unknown_scheme():
    custom = Scheme.named("moving", {"moving": {"go": ["fwd", "rev1"], "still": ["slow"]}})
    assert custom.class_of_state() == {"FWD": 0, "REV1": 0, "SLOW": 1}
    with pytest.raises(ValueError, match="labels.scheme 'kato5' is unknown"):
        Scheme.named("kato5")


def test_behaviour_input_excludes_label_neurons():
    mask = align_labels.behaviour_input_mask(
        ["AVAL", "AVBR", "SMDVL", "RIBR", "", "SMDDR"], ["AVA", "SMDV", "SMDD", "RIB"], True
    )
    assert mask.tolist() == [False, True, False, False, True, False]
    assert align_labels.behaviour_input_mask(["AVAL"], ["AVA"], False).tolist() == [True]


def _labels(tmp_path, raw, cfg, scheme="kato4"):
    traces = tmp_path / "traces.h5"
    preprocess.run(raw, "toy", cfg, traces, tmp_path / "pre.json")
    return align_labels.run(
        raw,
        traces,
        Scheme.named(scheme),
        ["AVA", "SMDV", "SMDD", "RIB"],
        True,
        tmp_path / "labels.h5",
        tmp_path / "labels.json",
    )


def test_run_with_resampling_keeps_state_proportions(tmp_path):
    raw = tmp_path / "old.mat"
    states = np.repeat([1, 2, 5, 3, 1, 8, 7, 4], 100).astype(float)
    write_old_schema(raw, n_frames=800, fps=2.0, states=states)
    summary = _labels(tmp_path, raw, PreprocessConfig(target_fps=3.0))
    (worm,) = summary["worms"]
    assert worm["class_counts_raw"] == {"forward": 300, "reversal": 200, "turn": 200}
    # 1.5 times the frames after resampling from 2 to 3 fps, by time
    for cls, n in worm["class_counts_raw"].items():
        assert worm["class_counts"][cls] == pytest.approx(1.5 * n, abs=3)
    assert worm["excluded_input_neurons"] == ["AVAL", "RIBR"]
    with h5py.File(tmp_path / "labels.h5", "r") as h5:
        labels = h5["worms/0/labels"][()]
        assert files.read_strings(h5["classes"]) == ["forward", "reversal", "turn"]
        assert h5["worms/0/behaviour_input"][()].tolist() == [False, True, True, True, False]
    # the NOSTATE block (raw frames 500-599, 250-300 s) is excluded at the same times
    t = np.arange(labels.size) / 3.0
    assert np.all(labels[(t > 250.5) & (t < 299.5)] == -1)
    assert np.all(labels[(t > 200.5) & (t < 249.5)] == 0)


def _state_counts(kato_npz, source):
    """Frames per Kato state (upper-case names) of worm ``source`` in the npz."""
    names = [s.upper() for s in kato_npz["state_names"]]
    counts = np.bincount(kato_npz[f"states_worm{source}"], minlength=len(names))
    return {names[i]: int(n) for i, n in enumerate(counts)}


@pytest.mark.realdata
@pytest.mark.parametrize("scheme", ["kato8", "fwdrev"])
def test_real_fixture_counts_match_the_states(kato_fixture, kato_npz, tmp_path, scheme):
    summary = _labels(tmp_path, kato_fixture, PreprocessConfig(target_fps=None), scheme=scheme)
    for worm, source in zip(summary["worms"], (0, 4), strict=True):
        n = _state_counts(kato_npz, source)
        assert worm["state_counts_raw"] == {k: n[k] for k in worm["state_counts_raw"]}
        if scheme == "kato8":
            for cls, count in worm["class_counts"].items():
                assert count == n[cls.upper()]
            assert worm["n_excluded"] == n["NOSTATE"]
        else:  # turns are left out with NOSTATE
            assert worm["class_counts"] == {
                "forward": n["FWD"] + n["SLOW"],
                "reversal": n["REV1"] + n["REV2"] + n["REVSUS"],
            }
            assert worm["n_excluded"] == n["NOSTATE"] + n["DT"] + n["VT"]
