"""Constrained decoding: the automata agree with Python's `re` / `json`; 100 % of sampled outputs are valid."""

from __future__ import annotations

import json
import random
import re
from collections import deque

import pytest
import torch

from lmstack.generate import GenerationStats, SamplingParams, generate
from lmstack.generate.constrained import TokenConstraint, token_texts
from lmstack.generate.json_fsm import JsonAutomaton
from lmstack.generate.json_schema import schema_to_regex
from lmstack.generate.regex_fsm import RegexAutomaton
from lmstack.model import ModelConfig, Transformer

from .mocks import ascii_tokenizer

PATTERNS = [
    r"\d{3}-\d{4}",
    r"(cat|dog)s?",
    r"[a-c\d]+x?",
    r"(?:ab){2,3}",
    r"\w+@\w+\.(com|org)",
    r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?",
    r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])*"',
    r"[^a]b|a*",
    r"x{0,2}y{2,}",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_automaton_matches_python_re(pattern):
    fsm, rng = RegexAutomaton(pattern), random.Random(0)
    alphabet = 'abcdxy0123456789-.@"\\ codgstmr'
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
        assert fsm.matches(s) == bool(re.fullmatch(pattern, s)), s


def test_regex_errors_name_the_pattern():
    for bad in ["(ab", "a{3,1}", "*a", r"\p{L}", "(?=x)"]:
        with pytest.raises(ValueError, match="regex"):
            RegexAutomaton(bad)


def random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.choice(["obj", "arr", "str", "num", "lit"] if depth < 3 else ["str", "num", "lit"])
    if kind == "obj":
        return {rng.choice(["a", "key", "é", 'q"uote', "\\", ""]): random_json(rng, depth + 1) for _ in range(3)}
    if kind == "arr":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "str":
        return rng.choice(["", "hi", "tab\there", "\u00e9\u4f60", "\x01", "/"])
    if kind == "num":
        return rng.choice([0, -1, 3.25, 1e-7, -0.0, 12345678901234])
    return rng.choice([True, False, None])


def test_json_automaton_agrees_with_json_loads():
    fsm, rng = JsonAutomaton(), random.Random(0)
    seen_valid = seen_invalid = 0
    for _ in range(1500):
        text = json.dumps({"root": random_json(rng)}, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.6:  # mutate: delete, insert or swap one character
            i = rng.randrange(len(text))
            c = rng.choice('{}[]",:0-.eE tfn\\u1')
            text = rng.choice([text[:i] + text[i + 1 :], text[:i] + c + text[i:], text[:i] + c + text[i + 1 :]])
        try:
            want = isinstance(json.loads(text), dict) and text == text.strip() and "NaN" not in text
        except ValueError:
            want = False
        assert fsm.matches(text) == want, text
        seen_valid += want
        seen_invalid += not want
    assert seen_valid > 300 and seen_invalid > 300


def shortest_completion(fsm, state, alphabet: str = '{"}]:,0eEtrualsn') -> int:
    todo, seen = deque([(state, 0)]), {state}
    while todo:
        s, d = todo.popleft()
        if fsm.accepting(s):
            return d
        for ch in alphabet:
            s2 = fsm.step(s, ch)
            if s2 is not None and s2 not in seen:
                seen.add(s2)
                todo.append((s2, d + 1))
    raise AssertionError("no completion")


def test_json_distance_is_the_shortest_completion():
    fsm, rng = JsonAutomaton(), random.Random(1)
    for _ in range(60):
        text = json.dumps({"k": random_json(rng), "n": -12.5e3, "s": "\\u00e9"}, ensure_ascii=False)
        for cut in range(0, len(text), 3):
            state = fsm.start()
            for ch in text[:cut]:
                state = fsm.step(state, ch)
            assert fsm.distance(state) == shortest_completion(fsm, state), text[:cut]


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
        "pet": {"type": "object", "properties": {"kind": {"const": "cat"}}, "required": ["kind"]},
        "score": {"type": ["number", "null"]},
    },
    "required": ["name", "age"],
}


def validate(value: object, schema: dict) -> bool:
    """A tiny validator for the subset SCHEMA uses."""
    if "const" in schema:
        return value == schema["const"]
    if "enum" in schema:
        return value in schema["enum"]
    types = schema.get("type")
    if isinstance(types, list):
        return any(validate(value, {**schema, "type": t}) for t in types)
    check = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}
    if types == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if types == "null":
        return value is None
    if not isinstance(value, check[types]) or (types == "integer" and isinstance(value, bool)):
        return False
    if types == "string":
        return len(value) <= schema.get("maxLength", 10**9)
    if types == "array":
        return len(value) <= schema.get("maxItems", 10**9) and all(validate(v, schema["items"]) for v in value)
    if types == "object":
        props = schema.get("properties", {})
        return set(schema.get("required", [])) <= set(value) and all(
            k in props and validate(v, props[k]) for k, v in value.items()
        )
    return True


def test_schema_regex_accepts_valid_and_rejects_invalid():
    fsm = RegexAutomaton(schema_to_regex(SCHEMA))
    assert fsm.matches('{"name": "Bo", "age": 3}')
    assert fsm.matches('{"name":"x","age":-1,"tags":["a","c"],"ok":true,"pet":{"kind":"cat"},"score":null}')
    assert not fsm.matches('{"age": 3, "name": "Bo"}')  # properties in schema order
    assert not fsm.matches('{"name": "Bo"}')  # required age missing
    assert not fsm.matches('{"name": "toolongname", "age": 3}')
    with pytest.raises(ValueError, match="unsupported"):
        schema_to_regex({"type": "object", "$ref": "#/x"})


@pytest.fixture(scope="module")
def setup():
    tok = ascii_tokenizer(
        [b'{"', b'":', b'", "', b"true", b"null", b"name", b"age", b"\xc3", b"\xa9", "é".encode(), b"12", b'"}']
    )
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=4, vocab_size=len(tok.pieces) + 3, max_seq_len=256)
    return Transformer(cfg).eval(), tok


@pytest.mark.parametrize(
    "kind, value, check",
    [
        ("json_mode", True, lambda s: isinstance(json.loads(s), dict)),
        ("json_schema", SCHEMA, lambda s: validate(json.loads(s), SCHEMA)),
        ("regex", r"(\d{3}-\d{4}|[a-z]+@[a-z]+\.com)", lambda s: re.fullmatch(r"(\d{3}-\d{4}|[a-z]+@[a-z]+\.com)", s)),
        ("choices", ["yes", "no", "maybe so"], lambda s: s in ["yes", "no", "maybe so"]),
    ],
)
def test_every_sampled_output_is_valid(setup, kind, value, check):
    model, tok = setup
    prompts = [tok.encode(p) for p in ["Answer: ", "x", "JSON please {"]]
    for seed in range(4):
        p = SamplingParams(max_new_tokens=60, temperature=1.0, seed=seed, n=2, stop_token_ids=[tok.eos_id])
        stats = GenerationStats()
        outs = generate(model, prompts, p.replace(**{kind: value}), tokenizer=tok, stats=stats)
        for ids in outs:
            text = tok.decode(ids)
            assert check(text), (kind, text)


def test_constraint_closes_in_time_and_caches_states(setup):
    model, tok = setup
    c = TokenConstraint(JsonAutomaton(), token_texts(tok, model.config.vocab_size), [tok.eos_id])
    state = c.start()
    for ch in '{"a": [[{"b": "xy':  # deep inside: 5 characters are needed to finish: "}]]}
        state = c.fsm.step(state, ch)
    assert c.fsm.distance(state) == 5

    def allowed(left: int) -> set[bytes]:
        return {tok.pieces[i] for i in c.mask(state, left).nonzero().flatten().tolist()}

    assert len(allowed(10)) > 50  # plenty of budget: any string character
    assert allowed(4) == {b'"', b'"}', b'{"'}  # 4 left after this one: close the string now ('{"' = "{" + '"')
    assert allowed(3) == {b'"}'}  # only the two-character piece still fits
    assert allowed(2) == {b""}  # impossible budget: EOS only (the <eos> piece is empty)
    n = len(c.cache)
    c.mask(state, 50)
    assert len(c.cache) == n  # cached
    ids = [i for i, t in enumerate(token_texts(tok, model.config.vocab_size)) if t is None]
    assert tok.pieces.index(b"\xc3") in ids and tok.eos_id in ids  # split UTF-8 and specials never allowed


def test_incomplete_output_is_never_returned_silently(setup):
    """A budget too small for any valid output: `generate` raises (with the outputs), a stream flags the row."""
    from lmstack.generate import IncompleteOutputError, stream_generate

    model, tok = setup
    p = SamplingParams(max_new_tokens=2, temperature=0, regex=r"\d{3}-\d{4}", stop_token_ids=[tok.eos_id])
    with pytest.raises(IncompleteOutputError, match="row\\(s\\) \\[0\\]") as err:
        generate(model, [tok.encode("x")], p, tokenizer=tok)
    assert err.value.finish_reasons == ["length"] and len(err.value.outputs) == 1
    stats = GenerationStats()
    outs = generate(model, [tok.encode("x")], p, tokenizer=tok, stats=stats, allow_incomplete=True)
    assert stats.finish_reasons == ["length"] and not re.fullmatch(r"\d{3}-\d{4}", tok.decode(outs[0]))
    last = list(stream_generate(model, tok.encode("x"), p, tokenizer=tok))[-1]
    assert last.token == -1 and last.finish_reason == "length"
    # with room, the same request completes: finish_reason "stop" and a valid output
    stats = GenerationStats()
    outs = generate(model, [tok.encode("x")], p.replace(max_new_tokens=20), tokenizer=tok, stats=stats)
    assert stats.finish_reasons == ["stop"] and re.fullmatch(r"\d{3}-\d{4}", tok.decode(outs[0]))
