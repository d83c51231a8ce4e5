"""The chat page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium): type a
message, watch the reply stream in, and check it is the answer the API gives, with TTFT and tokens/s shown; with a
collection behind the server, the retrieval toggle gets the grounded answer and shows its numbered sources."""

from __future__ import annotations

import re

import openai
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from lmstack.rag.serving import RetrievalService
from lmstack.serve.engine import Engine, EngineConfig
from lmstack.serve.server import build_app

from .conftest import LiveServer, set_field


def test_chat_page_streams_the_same_reply_as_the_api(tiny, browser):
    model, tok = tiny
    server = LiveServer(build_app(Engine(model, tok, EngineConfig(num_blocks=200, block_size=4)), tok, "tiny"))
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(ec.text_to_be_present_in_element((By.ID, "model"), "tiny · 256-token context"))
        set_field(browser, "temperature", "0")
        set_field(browser, "max_tokens", "24")
        set_field(browser, "input", "the quick brown fox")
        browser.find_element(By.ID, "input").send_keys(Keys.ENTER)
        reply = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant[data-done='true']")))
        text = reply.find_element(By.CLASS_NAME, "content").get_attribute("textContent")
        stats = reply.find_element(By.CLASS_NAME, "stats").text
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "the quick brown fox"}]
        want = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=24)
        assert text == want.choices[0].message.content and text
        m = re.fullmatch(r"TTFT (\d+) ms · (\d+) tokens · ([\d.]+|–) tokens/s · (stop|length)", stats)
        assert m and int(m.group(2)) == want.usage.completion_tokens, stats
        assert browser.find_element(By.CSS_SELECTOR, ".msg.user .content").text == "the quick brown fox"
        assert not browser.find_element(By.ID, "send").get_attribute("disabled")  # ready for the next turn
        assert not browser.find_element(By.ID, "retrieval-box").is_displayed()  # no collection, no toggle
    finally:
        server.close()


def test_retrieval_toggle_shows_the_grounded_answer_and_its_sources(long_tiny, collection, browser):
    model, tok = long_tiny
    engine = Engine(model, tok, EngineConfig(num_blocks=256, block_size=16, max_num_batched_tokens=1024))
    server = LiveServer(build_app(engine, tok, "tiny", retrieval=RetrievalService(collection, k=3)))
    question = "What does json.dumps do?"
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(ec.visibility_of_element_located((By.ID, "retrieval-box")))
        assert "hybrid search" in browser.find_element(By.ID, "collection").text
        browser.find_element(By.ID, "retrieval").click()
        set_field(browser, "rag_k", "2")
        set_field(browser, "temperature", "0")
        set_field(browser, "max_tokens", "16")
        set_field(browser, "input", question)
        browser.find_element(By.ID, "input").send_keys(Keys.ENTER)
        reply = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant[data-done='true']")))
        text = reply.find_element(By.CLASS_NAME, "content").get_attribute("textContent")
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        want = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=16,
            extra_body={"retrieval": {"k": 2}},
        )
        info = want.model_extra["retrieval"]
        assert text == want.choices[0].message.content and text
        shown = [s.get_attribute("textContent") for s in reply.find_elements(By.CSS_SELECTOR, ".sources summary")]
        assert len(shown) == 2 and shown[0].startswith("[1] json.rst") and "(library/json.rst)" in shown[0]
        cited = {c["number"]: c["supported"] for c in info["citations"] if c["exists"]}
        for n, line in enumerate(shown, 1):  # each source marked as the server's checks say
            assert ("cited, supported" in line) == cited.get(n, False), (line, info["citations"])
        head = reply.find_element(By.CLASS_NAME, "sources-head").text
        assert head == (f"Sources · abstained ({info['reason']})" if info["abstained"] else
                        "Sources · answered from the sources")  # fmt: skip
        excerpt = reply.find_element(By.CSS_SELECTOR, ".source .excerpt").get_attribute("textContent")
        assert excerpt == info["sources"][0]["text"]
    finally:
        server.close()
