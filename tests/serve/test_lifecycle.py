"""`lmstack serve` as a user runs it: a subprocess on a free loopback port; SIGTERM drains in-flight requests."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import openai
import pytest

from lmstack.cli import main

from .conftest import ServerProcess, make_model_dir


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return False
    except OSError:
        return True


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("long"), max_seq_len=384)


def test_sigterm_drains_in_flight_streams_then_exits(long_dir):
    server = ServerProcess(f"--model={long_dir}", "--served_model_name=m", "--kv_cache_bytes=8000000")
    assert "KV cache" in server.log and "127.0.0.1" in server.url
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        usage, no_eos = {"include_usage": True}, {"ignore_eos": True}
        stream = client.completions.create(model="m", prompt="the", max_tokens=300, stream=True, stream_options=usage,
                                           extra_body=no_eos)  # fmt: skip
        chunks = iter(stream)
        next(chunks)
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 30
        while not refused(server.url):  # new connections are turned away at once ...
            assert time.time() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        assert server.proc.poll() is None, "exited before the stream finished"  # ... while the stream goes on
        rest = list(chunks)
        assert rest[-1].usage.completion_tokens == 300 and rest[-2].choices[0].finish_reason == "length"
        assert server.proc.wait(60) == 0
        assert "stopped" in server.log and "Traceback" not in server.log
    finally:
        server.stop()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", f"--model={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["serve", "--port=70000"]) == 2 and "--port=70000" in capsys.readouterr().err
