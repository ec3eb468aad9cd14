"""prismatic/files.py: atomic writes."""

import pytest

from prismatic.files import staged, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_staging_file(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with staged(path) as staging:
            staging.write_text("half of the ne")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
    with staged(path) as first, staged(path) as second:  # two writers at once: separate staging files
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert path.read_text() == "first"  # the outer block ends last: its file wins whole
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and len(list(path.parent.iterdir())) == 1
