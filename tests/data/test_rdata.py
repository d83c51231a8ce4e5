"""The R lazy-load reader on serializations built here byte by byte (R Internals, "Serialization formats"),
then on the real Debian packages.

Every item is `int flags` (bits 0-7 type, bit 9 has-attributes, bit 10 has-tag, bits 12+ levels) and its
payload, big-endian (XDR). The builders below follow that layout directly, independent of the reader.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import zlib

import pytest

from lmstack.data.corpus import SOURCES
from lmstack.data.rdata import RNamedList, read_lazyload, read_rdx, unserialize
from lmstack.data.sources import fetch


def i32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def flags(kind: int, attr: bool = False, tag: bool = False, levels: int = 0) -> bytes:
    return i32(kind | (attr << 9) | (tag << 10) | (levels << 12))


def header(version: int = 3) -> bytes:
    out = b"X\n" + i32(version, 0x040201, 0x030500)
    return out + (i32(5) + b"UTF-8" if version == 3 else b"")


def charsxp(s: str | None) -> bytes:
    if s is None:
        return flags(9) + i32(-1)  # NA_STRING
    data = s.encode("utf-8")
    return flags(9, levels=64 if s.isascii() else 8) + i32(len(data)) + data  # ASCII / UTF8 mark


def symsxp(name: str) -> bytes:
    return flags(1) + charsxp(name)


def ref(index: int) -> bytes:
    return flags(255 | (index << 8))  # REFSXP with the index packed in the flags


def names_attr(names: list[str], name_sym: bytes) -> bytes:
    """Attribute pairlist `names = c(...)`: one tagged LISTSXP cell, then NILVALUE."""
    return flags(2, tag=True) + name_sym + strsxp(names) + flags(254)


def strsxp(items: list[str | None], attr: bytes = b"") -> bytes:
    return flags(16, attr=bool(attr)) + i32(len(items)) + b"".join(map(charsxp, items)) + attr


def intsxp(values: list[int], attr: bytes = b"") -> bytes:
    return flags(13, attr=bool(attr)) + i32(len(values)) + i32(*values) + attr


def vecsxp(items: list[bytes], attr: bytes = b"") -> bytes:
    return flags(19, attr=bool(attr)) + i32(len(items)) + b"".join(items) + attr


def test_character_vector_with_na_and_utf8():
    assert unserialize(header() + strsxp(["EMMA", None, "café", ""])) == ["EMMA", None, "café", ""]
    assert unserialize(header(version=2) + strsxp(["v2"])) == ["v2"]


def test_numbers_logicals_and_na():
    assert unserialize(header() + intsxp([1, -(2**31), 7])) == [1, None, 7]
    real = flags(14) + i32(2) + struct.pack(">2d", 1.5, -2.0)
    assert unserialize(header() + real) == [1.5, -2.0]


def test_named_list_and_symbol_reference():
    # list(a = c("x"), b = c(first = 1L)): the `names` symbol is written once, then referenced as REFSXP 1.
    # Attributes follow the elements, so the first `names` symbol written is the inner one.
    obj = vecsxp(
        [strsxp(["x"]), intsxp([1], attr=names_attr(["first"], symsxp("names")))], attr=names_attr(["a", "b"], ref(1))
    )
    value = unserialize(header() + obj)
    assert isinstance(value, RNamedList) and value.names == ["a", "b"]
    assert value.as_dict()["a"] == ["x"]
    assert value.as_dict()["b"].as_dict() == {"first": 1}


def test_altrep_compact_intseq():
    info = flags(2) + symsxp("compact_intseq") + flags(2) + symsxp("base") + flags(2) + intsxp([13]) + flags(254)
    state = flags(14) + i32(3) + struct.pack(">3d", 5, 10, 1)  # n = 5, start = 10, step = 1
    assert unserialize(header() + flags(238) + info + state + flags(254)) == [10, 11, 12, 13, 14]


@pytest.mark.parametrize(
    "data, match",
    [
        (b"A\n" + i32(3, 0, 0), "not an XDR"),
        (b"X\n" + i32(4, 0, 0), "version 4"),
        (header() + strsxp(["abc"])[:-1], "truncated"),
        (header() + flags(3), "unsupported R object type 3"),  # a closure
    ],
)
def test_malformed_serializations_raise(data, match):
    with pytest.raises(ValueError, match=match):
        unserialize(data)


def test_lazyload_database_round_trip(tmp_path):
    objects = {"emma": strsxp(["EMMA", "", "By Jane Austen"]), "moby": strsxp(["Call me Ishmael."])}
    rdb, index = b"", {}
    for name, payload in objects.items():
        raw = header() + payload
        blob = struct.pack(">I", len(raw)) + zlib.compress(raw)  # 4-byte length, then a zlib stream
        index[name] = (len(rdb), len(blob))
        rdb += blob
    variables = vecsxp([intsxp(list(v)) for v in index.values()], attr=names_attr(list(index), symsxp("names")))
    rdx = vecsxp(
        [variables, vecsxp([]), flags(10) + i32(1) + i32(1)],
        attr=names_attr(["variables", "references", "compressed"], ref(1)),
    )
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(header() + rdx))  # saveRDS: gzip
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    assert read_rdx(tmp_path / "Rdata.rdx") == index
    expected = {"emma": ["EMMA", "", "By Jane Austen"], "moby": ["Call me Ishmael."]}
    assert read_lazyload(tmp_path / "Rdata.rdx") == expected
    with pytest.raises(ValueError, match=r"no object\(s\) \['mansfield'\]"):
        read_lazyload(tmp_path / "Rdata.rdx", ["mansfield"])
    (tmp_path / "Rdata.rdb").write_bytes(rdb[:-5])
    with pytest.raises(ValueError, match="truncated database|cannot decompress"):
        read_lazyload(tmp_path / "Rdata.rdx", ["moby"])


needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="Debian packages need apt-get (not installed)")


@needs_apt
def test_real_janeaustenr_database():
    rdx = fetch(SOURCES["austen"]) / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
    index = read_rdx(rdx)
    novels = {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"}
    assert set(index) == novels
    emma = read_lazyload(rdx, ["emma"])["emma"]
    assert emma[:3] == ["EMMA", "", "By Jane Austen"] and len(emma) == 16_235  # lines of the novel


@needs_apt
def test_real_tokenizers_mobydick():
    rdx = fetch(SOURCES["mobydick"]) / "usr/lib/R/site-library/tokenizers/data/Rdata.rdx"
    (book,) = read_lazyload(rdx)["mobydick"]  # a named character vector of length 1
    assert book.startswith("\ufeffThe Project Gutenberg EBook of Moby Dick")
    assert len(book) == 1_257_294 and book.count("\r\n") > 20_000
