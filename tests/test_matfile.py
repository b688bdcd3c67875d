import h5py
import numpy as np
from wormgnn import matfile


def test_round_trip_of_every_value_kind(tmp_path):
    path = tmp_path / "x.mat"
    traces = np.arange(12.0).reshape(4, 3)  # MATLAB T x N
    matfile.write_struct(
        path,
        "Root",
        {
            "traces": [traces],
            "names": [["AVAL", "", "7"]],
            "nested": [[["OLQDR", "URYDR"], []]],
            "state": [{"fwd": np.array([1.0, 0.0]), "rev": np.array([0.0, 1.0])}],
            "flag": [np.array([True, False])],
            "text": ["hello"],
        },
    )
    with h5py.File(path, "r") as h5:
        root = h5["Root"]
        assert matfile.matlab_class(root) == "struct"
        assert matfile.struct_fields(root) == ["traces", "names", "nested", "state", "flag", "text"]
        # h5py holds MATLAB's reversed dimensions, as in the OSF files
        assert h5[root["traces"][0, 0]].shape == (3, 4)
        decoded = {k: matfile.decode(root[k]) for k in root}
    np.testing.assert_array_equal(decoded["traces"][0], traces)
    assert decoded["names"] == [["AVAL", "", "7"]]
    assert decoded["nested"] == [[["OLQDR", "URYDR"], []]]
    np.testing.assert_array_equal(decoded["state"][0]["rev"].ravel(), [0.0, 1.0])
    assert decoded["flag"][0].dtype == bool
    assert decoded["text"] == ["hello"]


def test_matlab_v73_header_and_user_block(tmp_path):
    path = tmp_path / "x.mat"
    matfile.write_struct(path, "Root", {"a": [np.ones(2)]})
    head = path.read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file")
    assert head[124:128] == b"\x00\x02IM"
    with h5py.File(path, "r") as h5:
        assert h5.userblock_size == 512
