"""Small I/O helpers: atomic writes keep the umask's mode and leave nothing behind."""

import os
import stat

import pytest
from wormgnn import files


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it after."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    files.write_json(tmp_path / "a.json", {"x": 1})
    with files.atomic_path(tmp_path / "sub" / "b.bin") as tmp:
        tmp.write_bytes(b"\0")
    for path in (tmp_path / "a.json", tmp_path / "sub" / "b.bin"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert files.current_umask() == mask


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), files.atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
