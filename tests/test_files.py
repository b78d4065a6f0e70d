"""gslrm.files: the atomic write every cache and import uses."""

import pytest

from gslrm.files import written_atomically


def test_written_atomically_replaces_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "sub" / "cameras.json"
    with written_atomically(target) as partial:
        assert partial.parent == target.parent and partial.name.startswith(".") and partial.suffix == ".json"
        partial.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), written_atomically(target) as partial:
        partial.write_text("half of the se")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"  # the old file, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["cameras.json"]  # no partial left behind
