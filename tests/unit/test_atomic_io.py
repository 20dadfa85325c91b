"""Atomic outputs: a file or directory appears under its final name only when complete, and a failure leaves
what was there before (and no temp leftovers)."""

import pytest

from evo2lite.io import atomic_dir, atomic_path


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "sub" / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("one")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("interrupted")
    assert (out / "a.txt").read_text() == "one"
    with atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    out = tmp_path / "x.tsv"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("new")
        raise RuntimeError("interrupted")
    assert out.read_text() == "old"
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.tsv"]
