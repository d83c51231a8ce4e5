from __future__ import annotations

import subprocess
import sys

import pytest

from lmstack.cli import COMMANDS, main, resolve


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_resolves_and_has_help(name, capsys):
    cfg_cls, func = resolve(name)
    assert callable(func)
    assert main([name, "--help"]) == 0
    assert f"lmstack {name}" in capsys.readouterr().out


def test_unknown_command_suggests(capsys):
    assert main(["pretrian"]) == 2
    assert "pretrain" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "lmstack.cli", "--help"], capture_output=True, text=True, check=True)
    assert "train-tokenizer" in out.stdout
