"""Serving fixtures: a tiny saved model with a trained ChatML tokenizer, and a real uvicorn server on loopback."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from lmstack.model import ModelConfig, Transformer, load_model
from lmstack.tokenizer import Tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. " * 20 + 'é 你好 😀 {"a": [1, 2], "b": true} 0123456789'


def sharpen(model: Transformer) -> Transformer:
    """Make a random model depend on its context: at the 0.02 init attention is nearly uniform and small, so the
    next token is almost a function of the current one (a KV-cache bug would go unnoticed). Scaling q/k sharpens
    attention, scaling v/o makes it matter, and scaling the head makes greedy choices clear-cut (no near-ties
    for float noise to flip)."""
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
        for block in model.blocks:
            for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.attn.o_proj):
                proj.weight.mul_(4)
    return model


def make_model_dir(path: Path, max_seq_len: int = 256, d_model: int = 32, n_layers: int = 2) -> Path:
    """A random model + a 300-token BPE tokenizer with ChatML tokens, saved as an HF directory."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer.train([TEXT], 300, special_tokens=specials, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=n_layers, d_model=d_model, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                      max_seq_len=max_seq_len)  # fmt: skip
    cfg.eos_token_id = tok.eos_id
    model = sharpen(Transformer(cfg))
    model.save_pretrained(path, tokenizer=tok)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny-serve"))


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return load_model(str(tiny_dir), device="cpu")


class LiveServer:
    """A uvicorn server for `app` on a free loopback port, in a thread of this process."""

    def __init__(self, app) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]  # fmt: skip


@pytest.fixture
def browser(tmp_path):
    # .ci/run installs both Debian packages; a missing browser is a broken set-up and must fail, not skip
    assert shutil.which(CHROMIUM) and shutil.which(DRIVER), "apt-get install chromium chromium-driver"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def set_field(driver, element_id: str, value: str) -> None:
    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(value)


class ServerProcess:
    """`python -m lmstack.serve.server ...` with its stderr collected; `url` once it listens."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "lmstack.serve.server", "--port=0", "--log_level=warning", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.url = ""
        started = threading.Event()

        def drain() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if m := re.search(r"listening on (http://\S+)", line):
                    self.url = m.group(1)
                    started.set()
            started.set()

        threading.Thread(target=drain, daemon=True).start()
        started.wait(120)
        assert self.url, "server did not start:\n" + "".join(self.lines)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


# ---- retrieval and embeddings (lmstack/rag/serving.py plugs lmstack.rag into the server) ----------------------

DOCS = {  # a small collection: each question below has one clearly right source
    "tutorial/files.md": "# Reading and Writing Files\n\nTo read a file line by line, loop over the file object: "
    "`for line in f: print(line)`. This is memory efficient and fast.\n\nUse `f.readlines()` to get a list of "
    "all the lines of the file.\n",
    "library/json.rst": "json --- JSON encoder and decoder\n=================================\n\n``json.dumps`` "
    "serializes an object to a JSON formatted string. ``json.loads`` parses a JSON document into an object.\n",
    "library/asyncio.md": "# Event loop\n\nThe event loop runs asynchronous tasks and callbacks, performs network "
    "IO operations and runs subprocesses.\n",
}


@pytest.fixture(scope="session")
def minilm():
    from lmstack.rag.embedder import SentenceEmbedder

    return SentenceEmbedder("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def collection(minilm, tmp_path_factory):
    """An in-memory hybrid collection (MiniLM + exact search) of DOCS."""
    from lmstack.rag import Index, IndexSettings
    from lmstack.rag.documents import Document

    ix = Index.create(tmp_path_factory.mktemp("rag") / "ix", IndexSettings(ann="exact", chunk_size=60),
                      embedder=minilm)  # fmt: skip
    ix.add_documents([Document(path, path.rsplit("/", 1)[-1], text) for path, text in DOCS.items()])
    return ix


@pytest.fixture(scope="session")
def long_tiny(tmp_path_factory):
    """The tiny test model with a 2,048-token window: grounded prompts (rules + sources) are long."""
    return load_model(str(make_model_dir(tmp_path_factory.mktemp("tiny-long"), max_seq_len=2048)), device="cpu")
