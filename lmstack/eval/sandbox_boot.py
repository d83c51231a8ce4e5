"""Runs inside the sandbox's fresh namespaces, before the untrusted program: lock the filesystem, then exec it.

    python -I -S sandbox_boot.py PROGRAM_FILE MEMORY_BYTES CPU_SECONDS FILE_BYTES NPROC NOFILE DROP_UID DROP_GID

Steps (sandbox.py explains why each exists):
  1. read the program (it lives in the caller's temp dir, which the next steps hide);
  2. make every existing mount read-only (mount_setattr(2) with AT_RECURSIVE, or one remount per mount point);
  3. mount small private tmpfs on /tmp and /dev/shm: the only writable places, gone when the namespace ends;
  4. write the program to /tmp/work/main.py and make that the working directory;
  5. resource limits: address space, CPU seconds, file size (this also bounds captured output), processes, files;
  6. drop root (when the caller is really root) to nobody, so the process limit applies and nothing is owned;
     if nobody cannot reach the interpreter (pyenv under /root, mode 700), an empty tmpfs covers the blocking
     directory and the interpreter's prefix is bind-mounted back at its own path (`expose_interpreter`);
  7. exec Python on the program. Any failure before the exec exits 97: the caller never runs code unsandboxed.
Uses only the standard library (the sandbox runs `python -I -S`). Left out: seccomp syscall filtering.
"""

import ctypes
import os
import resource
import sys

SETUP_FAILED = 97
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
         "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}  # fmt: skip
libc = ctypes.CDLL(None, use_errno=True)


def fail(msg: str) -> None:
    os.write(2, f"sandbox setup failed: {msg}\n".encode())
    os._exit(SETUP_FAILED)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> int:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    return libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))


def read_only_everything() -> None:
    """Every mount read-only. mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, {attr_set: MOUNT_ATTR_RDONLY}) in one
    call where the kernel has it (5.12+), else a read-only bind remount of each mount point keeping its flags."""
    attr = (ctypes.c_uint64 * 4)(
        1, 0, 0, 0
    )  # struct mount_attr {attr_set = MOUNT_ATTR_RDONLY, clr, propagation, userns}
    if libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:  # 442 = mount_setattr
        return
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in sorted(mounts, key=lambda m: len(m[4])):  # parents before children
        target = fields[4].replace("\\040", " ")
        keep = sum(FLAGS.get(o, 0) for o in fields[5].split(","))  # locked flags must be kept in a user namespace
        if mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep) != 0 and target == "/":
            fail(f"cannot remount / read-only (errno {ctypes.get_errno()})")


def expose_interpreter(prefix: str) -> None:
    """Make `prefix` (the real interpreter's install) reachable for nobody at the same path: stage a bind mount of
    it, cover the highest ancestor that others may not traverse with an empty world-readable tmpfs (hiding the
    rest of, say, /root), recreate the path in it and bind the prefix back, read-only."""
    parts = prefix.strip("/").split("/")
    ancestors = ["/" + "/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    blocked = [a for a in ancestors if not os.stat(a).st_mode & 0o001]
    if not blocked:
        return
    stage = "/tmp/.interpreter"
    os.makedirs(stage)
    if mount(prefix, stage, None, MS_BIND | MS_REC) or mount("tmpfs", blocked[0], "tmpfs", MS_NOSUID | MS_NODEV,
                                                             "size=1m,mode=755"):  # fmt: skip
        fail(f"cannot expose the interpreter at {prefix} (errno {ctypes.get_errno()})")
    os.makedirs(prefix, mode=0o755, exist_ok=True)
    if mount(stage, prefix, None, MS_BIND | MS_REC) or mount(None, prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY):
        fail(f"cannot bind the interpreter back at {prefix} (errno {ctypes.get_errno()})")


def main() -> None:
    program, mem, cpu, fsize, nproc, nofile, uid, gid = sys.argv[1], *map(int, sys.argv[2:9])
    with open(program, "rb") as f:
        code = f.read()
    if mount(None, "/", None, MS_REC | MS_PRIVATE) != 0:  # nothing we do propagates to the host
        fail(f"cannot make mounts private (errno {ctypes.get_errno()})")
    read_only_everything()
    for target, size in (("/tmp", "64m"), ("/dev/shm", "16m")):
        if os.path.isdir(target) and mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777"):
            fail(f"cannot mount a private tmpfs on {target} (errno {ctypes.get_errno()})")
    os.makedirs("/tmp/work", mode=0o755)
    with open("/tmp/work/main.py", "wb") as f:
        f.write(code)
    executable = os.path.realpath(sys.executable)  # the real interpreter, not a venv link that /tmp may hide
    if uid >= 0:
        os.chown("/tmp/work", uid, gid)
        expose_interpreter(os.path.realpath(sys.base_prefix))
    os.chdir("/tmp/work")
    limits = {resource.RLIMIT_AS: mem, resource.RLIMIT_CPU: cpu, resource.RLIMIT_FSIZE: fsize,
              resource.RLIMIT_NPROC: nproc, resource.RLIMIT_NOFILE: nofile, resource.RLIMIT_CORE: 0}  # fmt: skip
    for res, value in limits.items():
        resource.setrlimit(res, (value, value))
    if uid >= 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            fail("could not drop root")
    os.execv(executable, [executable, "-I", "main.py"])


try:
    main()
except Exception as e:  # noqa: BLE001 - any setup error must stop before the exec
    fail(repr(e))
