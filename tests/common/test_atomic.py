from __future__ import annotations

import pytest

from lmstack.common.atomic import atomic_dir, atomic_write_text
from lmstack.common.log import JsonlLogger, read_jsonl


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "a.txt").write_text("two")
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp debris left behind
    with atomic_dir(target) as d:
        (d / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_atomic_write_text(tmp_path):
    p = tmp_path / "x" / "f.json"
    atomic_write_text(p, "{}")
    atomic_write_text(p, '{"a": 1}')
    assert p.read_text() == '{"a": 1}'
    assert len(list(p.parent.iterdir())) == 1


def test_jsonl_logger_round_trip(tmp_path):
    log = JsonlLogger(tmp_path / "m.jsonl")
    log.log(step=1, loss=2.5)
    log.log(step=2, loss=2.0)
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # a crash mid-line
    recs = read_jsonl(tmp_path / "m.jsonl")
    assert [r["step"] for r in recs] == [1, 2] and recs[1]["loss"] == 2.0


def test_atomic_write_has_normal_permissions(tmp_path):
    import os

    p = tmp_path / "f.txt"
    atomic_write_text(p, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_atomic_files_replace_only_what_they_write(tmp_path):
    from lmstack.common.atomic import atomic_files

    target = tmp_path / "out"
    with atomic_files(target) as d:  # a new directory appears complete
        (d / "a.txt").write_text("one")
    (target / "mine.txt").write_text("user file")
    with atomic_files(target) as d:
        (d / "a.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "mine.txt"]  # nothing else removed, no debris
    assert (target / "a.txt").read_text() == "two"
    with pytest.raises(RuntimeError):
        with atomic_files(target) as d:
            (d / "a.txt").write_text("three")
            raise RuntimeError("crash mid-save")
    assert (target / "a.txt").read_text() == "two"
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "mine.txt"]
