"""The chat page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium): type a
message, watch the reply stream in, and check it is the answer the API gives, with TTFT and tokens/s shown."""

from __future__ import annotations

import re

import openai
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

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
    finally:
        server.close()
