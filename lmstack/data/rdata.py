"""A standard-library reader for R lazy-load databases (`Rdata.rdx` + `Rdata.rdb`) holding text.

R packages ship their data sets as a lazy-load database: `Rdata.rdx` is a compressed R serialization of a
list whose `variables` element maps each object name to an (offset, length) pair; the bytes of `Rdata.rdb`
at that slice are a 4-byte big-endian uncompressed length followed by a zlib stream of the object's own R
serialization. We use it to read the novels in the Debian packages `r-cran-janeaustenr` and
`r-cran-tokenizers` without installing R.

The serialization format (R Internals, "Serialization formats"; `src/main/serialize.c`), XDR flavour:

    "X\\n"  int version (2 or 3)  int writer_version  int min_reader_version
    [version 3: int n  n bytes of native encoding]
    item := int flags  payload          flags: bits 0-7 type, bit 8 is-object, bit 9 has-attributes,
                                               bit 10 has-tag, bits 12-27 "levels" (gp field)

Handled types: NILVALUE 254, REFSXP 255, SYMSXP 1, LISTSXP 2 (pairlist: [attr] [tag] car cdr), CHARSXP 9
(int length, -1 = NA, then bytes), LGLSXP 10, INTSXP 13, REALSXP 14, STRSXP 16, VECSXP 19, RAWSXP 24, the
special environments, and ALTREP 238 for the compact integer sequences and wrappers R 3.5+ writes.
Attributes of vectors follow their payload. Left out: closures, environments with contents, language objects,
bytecode, complex numbers, bzip2/xz-compressed databases — a clear `ValueError` names what was found.
Vectors come back as Python lists; an object with a `names` attribute stays a list (`read_rdx` turns the
index into a dict).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

NILVALUE, REFSXP, SYMSXP, LISTSXP, CHARSXP = 254, 255, 1, 2, 9
LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP, RAWSXP, ALTREP = 10, 13, 14, 16, 19, 24, 238
# Singletons that carry no payload: empty/base/global env, unbound value, missing arg, base namespace.
NO_PAYLOAD = {242, 241, 253, 252, 251, 247}
NA_INT = -(2**31)


class RSymbol(str):
    """An R symbol (a name), kept distinct from a character string."""


class _Reader:
    """Cursor over the bytes of one XDR R serialization stream."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where
        self.refs: list[Any] = []  # REFSXP indexes into this table (1-based)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.where}: R serialization truncated at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints, upper and lower 32 bits
            hi, lo = struct.unpack(">II", self.take(8))
            n = (hi << 32) + lo
        return n

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise ValueError(f"{self.where}: not an XDR R serialization (expected 'X\\n' at the start)")
        version = self.int()
        if version not in (2, 3):
            raise ValueError(f"{self.where}: R serialization version {version}; only 2 and 3 are supported") from None
        self.int(), self.int()  # writer R version, minimal reader R version
        if version == 3:
            self.take(self.int())  # native encoding name, e.g. b"UTF-8"

    def item(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == NILVALUE or kind in NO_PAYLOAD:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            sym = RSymbol(self.item() or "")
            self.refs.append(sym)
            return sym
        if kind == LISTSXP:
            return self.pairlist(has_attr, has_tag)
        if kind == CHARSXP:
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", errors="replace")
        if kind == ALTREP:
            return self.altrep()
        value = self.vector(kind)
        if has_attr:
            attrs = self.item()  # a pairlist, returned as a dict
            if isinstance(value, list) and isinstance(attrs, dict) and "names" in attrs:
                value = RNamedList(value, attrs["names"])
        return value

    def vector(self, kind: int) -> list[Any]:
        if kind not in (LGLSXP, INTSXP, REALSXP, RAWSXP, STRSXP, VECSXP):
            raise ValueError(f"{self.where}: unsupported R object type {kind} at byte {self.pos - 4}")
        n = self.length()
        if kind in (LGLSXP, INTSXP):
            return [None if v == NA_INT else v for v in struct.unpack(f">{n}i", self.take(4 * n))]
        if kind == REALSXP:
            return list(struct.unpack(f">{n}d", self.take(8 * n)))
        if kind == RAWSXP:
            return list(self.take(n))
        return [self.item() for _ in range(n)]  # STRSXP or VECSXP

    def pairlist(self, has_attr: bool, has_tag: bool) -> dict[str, Any]:
        """A pairlist (LISTSXP chain) as an ordered dict tag -> value (untagged cells get '#<i>')."""
        out: dict[str, Any] = {}
        while True:
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            out[str(tag) if tag is not None else f"#{len(out)}"] = self.item()
            flags = self.int()  # the cdr: another LISTSXP cell or the terminating NILVALUE
            if flags & 0xFF == NILVALUE:
                return out
            if flags & 0xFF != LISTSXP:
                raise ValueError(f"{self.where}: pairlist ends in type {flags & 0xFF}, expected a pairlist or NULL")
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def altrep(self) -> Any:
        """ALTREP objects R 3.5+ writes: compact sequences and wrapper classes (state, then attributes)."""
        info, state, _attrs = self.item(), self.item(), self.item()
        cls = str(next(iter(info.values()))) if isinstance(info, dict) else "?"
        if cls == "compact_intseq":  # state = REALSXP (n, first, step)
            n, first, step = (int(v) for v in state)
            return [first + i * step for i in range(n)]
        if cls == "compact_realseq":
            n, first, step = state
            return [first + i * step for i in range(int(n))]
        if cls.startswith("wrap_"):  # state = list(wrapped vector, metadata)
            return state[0]
        raise ValueError(f"{self.where}: unsupported ALTREP class {cls!r}")


class RNamedList(list):
    """An R vector with a `names` attribute: a list that also answers `.names` and `.as_dict()`."""

    def __init__(self, values: list[Any], names: list[str]) -> None:
        super().__init__(values)
        self.names = list(names)

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self.names, self))


def unserialize(data: bytes, where: str = "<bytes>") -> Any:
    """Parse one uncompressed XDR R serialization (the output of R's `serialize(x, NULL)`)."""
    reader = _Reader(data, where)
    reader.header()
    return reader.item()


def _decompress(blob: bytes, where: str) -> bytes:
    """gzip (saveRDS, the .rdx) or zlib (lazy-load values); bzip2/xz databases are not supported."""
    try:
        if blob[:2] == b"\x1f\x8b":
            return gzip.decompress(blob)
        return zlib.decompress(blob)
    except (OSError, zlib.error) as e:
        raise ValueError(f"{where}: cannot decompress ({e}); gzip/zlib lazy-load databases only") from None


def read_rdx(path: str | Path) -> dict[str, tuple[int, int]]:
    """The index of a lazy-load database: object name -> (offset, length) in the .rdb file."""
    path = Path(path)
    index = unserialize(_decompress(path.read_bytes(), str(path)), str(path))
    if not isinstance(index, RNamedList) or "variables" not in index.names:
        raise ValueError(f"{path}: not a lazy-load index (no 'variables' element)")
    variables = index.as_dict()["variables"]
    return {name: (int(v[0]), int(v[1])) for name, v in variables.as_dict().items()}


def read_lazyload(rdx: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Read objects from `X.rdx` + `X.rdb` (same stem). `names=None` reads every object."""
    rdx = Path(rdx)
    rdb = rdx.with_suffix(".rdb")
    index = read_rdx(rdx)
    missing = [n for n in names or [] if n not in index]
    if missing:
        raise ValueError(f"{rdx}: no object(s) {missing}; it holds {sorted(index)}")
    out = {}
    with rdb.open("rb") as f:
        for name in names or sorted(index):
            offset, length = index[name]
            f.seek(offset)
            blob = f.read(length)
            where = f"{rdb}[{name}]"
            if len(blob) != length or length < 4:
                raise ValueError(f"{where}: truncated database (wanted {length} bytes at offset {offset})")
            size = struct.unpack(">I", blob[:4])[0]
            data = _decompress(blob[4:], where)
            if len(data) != size:
                raise ValueError(f"{where}: decompressed {len(data)} bytes, header says {size}")
            out[name] = unserialize(data, where)
    return out
