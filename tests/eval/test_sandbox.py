"""The sandbox against hostile programs: each one must end on time and leave the machine as it was.

Needs Linux namespaces (`unshare`), which this project's machines and CI have (they run as root); `isolation()`
reports "namespaces" there and the first test asserts it, so a machine without them fails loudly instead of
silently testing the weak fallback.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from lmstack.eval.sandbox import Limits, isolation, run_many, run_python

FAST = Limits(timeout_s=3.0, memory_mb=512, max_processes=16, max_output_kb=64)


def lingering(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A world-writable directory outside /tmp (the sandbox replaces /tmp) and /root (hidden when the interpreter lives
    there), so only the read-only mount stops writes."""
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path.home() / ".cache"
    d = base / f"lmstack-sandbox-test-{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True)
    os.chmod(d, 0o777)
    (d / "keep").write_text("precious")
    yield d
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def test_namespaces_are_available() -> None:
    assert isolation() == "namespaces"


def test_normal_program_output_and_exit_codes() -> None:
    ok = run_python("print('hello', 6 * 7)", FAST)
    assert (ok.status, ok.returncode, ok.stdout) == ("passed", 0, "hello 42\n")
    bad = run_python("import sys; print('oops', file=sys.stderr); sys.exit(3)", FAST)
    assert (bad.status, bad.returncode) == ("failed", 3) and "oops" in bad.stderr
    assert run_python("assert 1 == 2", FAST).status == "failed"


def test_infinite_loop_times_out() -> None:
    t = time.perf_counter()
    r = run_python("while True:\n    pass\n", FAST)
    assert r.status == "timeout" and time.perf_counter() - t < FAST.timeout_s + 3


def test_fork_bomb_is_contained() -> None:
    marker = f"bomb-{uuid.uuid4().hex}"
    code = (f"import os, time\nmarker = '{marker}'\n"
            "while True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n")  # fmt: skip
    t = time.perf_counter()
    r = run_python(code, FAST)
    assert r.status in ("timeout", "failed", "killed") and time.perf_counter() - t < FAST.timeout_s + 5
    time.sleep(0.5)
    assert lingering(marker) == []


def test_daemon_cannot_outlive_the_run() -> None:
    marker = f"daemon-{uuid.uuid4().hex}"
    code = ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'])\n"
            "    os._exit(0)\nprint('parent done')\n")  # fmt: skip
    r = run_python(code, FAST)
    assert r.status == "passed"
    time.sleep(0.5)
    assert lingering(marker) == []


def test_cannot_write_or_delete_files(outside: Path) -> None:
    code = f"import os\nopen('{outside}/pwned', 'w').write('x')\n"
    r = run_python(code, FAST)
    assert r.status == "failed" and "Read-only file system" in r.stderr
    r = run_python(f"import os\nprint(os.system('touch {outside}/pwned2; rm -f {outside}/keep'))", FAST)
    assert r.status == "passed"  # os.system itself runs, its writes fail
    assert sorted(p.name for p in outside.iterdir()) == ["keep"] and (outside / "keep").read_text() == "precious"
    tmp_marker = f"/tmp/lmstack-sandbox-{uuid.uuid4().hex}"
    assert run_python(f"open('{tmp_marker}', 'w').write('x'); print(open('{tmp_marker}').read())", FAST).stdout == "x\n"
    assert not os.path.exists(tmp_marker)  # the sandbox's /tmp is private and gone


def test_no_network() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        r = run_python(code, FAST)
        assert r.status == "failed" and "connected" not in r.stdout
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_memory_bomb_fails() -> None:
    r = run_python("x = bytearray(4 * 1024**3)\nprint('allocated')", FAST)
    assert r.status == "failed" and "MemoryError" in r.stderr


def test_output_flood_is_capped() -> None:
    r = run_python("while True:\n    print('x' * 1000)\n", FAST)
    assert r.status in ("killed", "failed", "timeout") and len(r.stdout) <= FAST.max_output_kb * 1024


def test_run_many_keeps_order() -> None:
    rs = run_many([f"print({i})" for i in range(5)], FAST, workers=2)
    assert [r.stdout.strip() for r in rs] == [str(i) for i in range(5)]
