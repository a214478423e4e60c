"""The one atomic-write helper: ordinary file modes, no partial or temporary files."""

import errno
import os
import stat

import numpy as np
import pytest

from nerfkit.data.io import write_image_atomic
from nerfkit.fileio import atomic_write, write_json_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_umask_modes_of_ordinary_files(tmp_path, umask_022):
    # An ordinary file the user makes, for comparison (not a mode nerfkit computes).
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    png = write_image_atomic(tmp_path / "r.png", np.zeros((4, 4, 3), np.float32))
    js = write_json_atomic(tmp_path / "e.json", {"a": 1})
    assert _mode(plain) == 0o644
    assert _mode(png) == _mode(plain)  # was 0600 (the temporary file's)
    assert _mode(js) == _mode(plain)


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(OSError):
        with atomic_write(path) as f:
            f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_modes_follow_the_current_umask(tmp_path):
    old = os.umask(0o027)
    try:
        js = write_json_atomic(tmp_path / "e.json", {"a": 1})
        assert _mode(js) == 0o640
    finally:
        os.umask(old)
