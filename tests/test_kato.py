import numpy as np
import pytest
from conftest import write_old_schema
from wormgnn import matfile
from wormgnn.kato import KatoFormatError, load_recordings
from wormgnn.names import resolve_worm

REMOVED_UPSTREAM = {"AVAL", "AVAR", "SMDVL", "SMDVR", "SMDDL", "SMDDR", "RIBL", "RIBR"}


@pytest.mark.realdata
def test_real_fixture_new_schema(kato_fixture, kato_npz):
    worms = load_recordings(kato_fixture)
    assert [r.n_rois for r in worms] == [103, 121]
    assert [r.n_frames for r in worms] == [3137, 3021]
    assert [round(r.fps, 3) for r in worms] == [2.905, 2.797]
    state_names = [s.upper() for s in kato_npz["state_names"]]
    for rec, source in zip(worms, (0, 4), strict=True):
        assert rec.dff.shape == (rec.n_frames, rec.n_rois)
        assert rec.raw is None  # the new schema has no raw fluorescence
        assert np.all(np.diff(rec.time) > 0)
        # states and names agree with the independent per-frame copy of all 5 worms
        decoded = [rec.state_names[s] for s in rec.states]
        assert decoded == [state_names[s] for s in kato_npz[f"states_worm{source}"]]
        full = [str(n) for n in kato_npz[f"neuron_names_worm{source}"]]
        assert [c[0] for c in rec.roi_names] == [n for n in full if n not in REMOVED_UPSTREAM]


def test_old_schema_with_raw_traces_and_candidate_ids(tmp_path):
    path = tmp_path / "old.mat"
    written = write_old_schema(path, time_field="timVectorSeconds")  # the old WT_NoStim typo
    (rec,) = load_recordings(path)
    np.testing.assert_allclose(rec.raw, written["traces_raw"][0])
    np.testing.assert_allclose(rec.dff, written["traces"][0])
    assert rec.roi_names == [["AVAL"], [], ["VB01"], ["OLQDR", "URYDR"], ["RIBR", "---"]]
    assert resolve_worm(rec.roi_names) == ["AVAL", "", "VB1", "", "RIBR"]
    assert rec.state_names[:3] == ["FWD", "SLOW", "DT"]
    codes = written["States"][0].astype(int)
    assert [rec.state_names[s] for s in rec.states[:8]] == [
        ("FWD", "SLOW", "DT", "VT", "REV1", "REV2", "REVSUS", "NOSTATE")[c - 1] for c in codes[:8]
    ]
    np.testing.assert_allclose(rec.time, written["timVectorSeconds"][0])


def test_stim_codes_and_authoritative_states_key(tmp_path):
    states = np.array([1, 2, 3, 4] * 50, dtype=float)
    plain = tmp_path / "stim.mat"
    write_old_schema(plain, root="WT_Stim", states=states)
    (rec,) = load_recordings(plain)
    assert rec.state_names == ["FWD", "REV", "REVSUS", "TURN"]
    keyed = tmp_path / "hiscl.mat"
    key = ["TURN", "FWD", "REV", "REVSUS"]  # a different order: the key wins
    write_old_schema(keyed, root="AVA_HisCl", states=states, extra={"States_key": [key]})
    (rec,) = load_recordings(keyed)
    assert [rec.state_names[s] for s in rec.states[:4]] == key


def test_new_schema_written_like_osf(tmp_path):
    path = tmp_path / "new.mat"
    dff = np.random.default_rng(0).normal(size=(30, 3))
    onehot = {
        k: np.zeros(30) for k in ("dt", "fwd", "nostate", "rev1", "rev2", "revsus", "slow", "vt")
    }
    onehot["fwd"][:20] = 1
    onehot["rev1"][20:] = 1
    matfile.write_struct(
        path,
        "NoStim_Data",
        {
            "deltaFOverF_bc": [dff],
            "NeuronNames": [["1", "AVAL", "VB01"]],
            "States": [onehot],
            "tv": [np.arange(30) / 2.5],
            "fps": [np.float64(2.5)],
            "dataset": ["x"],
        },
    )
    (rec,) = load_recordings(path)
    np.testing.assert_allclose(rec.dff, dff)
    assert [rec.state_names[s] for s in rec.states[[0, 25]]] == ["FWD", "REV1"]
    assert rec.fps == 2.5


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + b"\0" * 200, r"MATLAB v5 .*'-v7\.3'"),
        (b"MATLAB 7.3 MAT-file" + b" " * 120, r"cut off or damaged.*download or copy it again"),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", r"HTML page.*download it"),
        (b"time,AVAL,AVAR\n0.0,1.2,0.8\n", r"text file beginning 'time,AVAL,AVAR"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 50, r"gzip-compressed.*Extract"),
        (b"", r"empty \(0 bytes\)"),
        (b"\x00\x01\x02\xff" * 20, r"binary file of another kind.*Check that the path"),
    ],
)
def test_not_hdf5_says_what_the_file_is(tmp_path, content, says):
    path = tmp_path / "in.mat"
    path.write_bytes(content)
    with pytest.raises(KatoFormatError, match=r"in\.mat: not a MATLAB v7\.3 \(HDF5\) file: "):
        load_recordings(path)
    with pytest.raises(KatoFormatError, match=says):
        load_recordings(path)


def test_truncated_file(tmp_path):
    full = tmp_path / "full.mat"
    write_old_schema(full, n_frames=2000)
    cut = tmp_path / "cut.mat"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(KatoFormatError, match=r"cut\.mat: .*(truncated|not a MATLAB)"):
        load_recordings(cut)


def test_unknown_root_struct(tmp_path):
    path = tmp_path / "other.mat"
    write_old_schema(path, root="SomethingElse")
    with pytest.raises(
        KatoFormatError, match=r"other\.mat: no root struct named WT_NoStim.*SomethingElse"
    ):
        load_recordings(path)
    assert load_recordings(path, root="SomethingElse")[0].n_rois == 5


@pytest.mark.parametrize("field", ["States", "fps", "IDs"])
def test_missing_required_field(tmp_path, field):
    path = tmp_path / "partial.mat"
    write_old_schema(path, drop=(field,))
    with pytest.raises(
        KatoFormatError, match=rf"partial\.mat: field WT_NoStim\.{field}\b.*missing"
    ):
        load_recordings(path)


def test_missing_traces_names_both_alternatives(tmp_path):
    path = tmp_path / "notraces.mat"
    write_old_schema(path, drop=("traces", "traces_raw"))
    with pytest.raises(KatoFormatError, match=r"field WT_NoStim\.traces or traces_raw is missing"):
        load_recordings(path)


def test_state_length_mismatch(tmp_path):
    path = tmp_path / "short.mat"
    write_old_schema(path, n_frames=100, states=np.ones(90))
    with pytest.raises(KatoFormatError, match=r"field WT_NoStim\.States of worm 0 has 90 frames"):
        load_recordings(path)
