"""Constrained decoding: lift a character automaton to a mask over the vocabulary, cached per automaton state.

A token is allowed in state s iff feeding its text character by character keeps the automaton alive; EOS is
allowed iff s accepts. Checking all V tokens naively costs V x (token length) steps per state, so the
vocabulary is stored as a character trie and walked depth-first together with the automaton: a dead prefix
prunes every token below it (Willard & Louf 2023 precompute a similar index; we build it lazily, per state
actually reached). Each state's result — allowed ids, the state each one leads to, and that state's distance
to acceptance — is cached, so a state seen again costs one small vectorised mask.

Finishing in time: a random model may never close a string or a bracket. With `left` tokens still to come
after this one, only tokens whose next state can be completed in <= `left` characters are allowed. Every
character on a shortest completion is a single ASCII character, which byte-level vocabularies have as a
token, so the output is always complete when `max_new_tokens` is large enough for the shortest valid output.

Limits (documented in docs/generate.md): tokens that are not valid UTF-8 on their own (a multi-byte character
split across tokens) and special tokens are never allowed, so characters the vocabulary only spells in pieces
cannot appear; cost per new state is one trie walk (~0.1-1 s for a 50k vocabulary in pure Python).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lmstack.generate.params import SamplingParams
from lmstack.generate.stop import token_bytes


class CharAutomaton(Protocol):
    def start(self) -> Any: ...
    def step(self, state: Any, ch: str) -> Any | None: ...
    def accepting(self, state: Any) -> bool: ...
    def can_continue(self, state: Any) -> bool: ...
    def distance(self, state: Any) -> float: ...


@dataclass
class StateEntry:
    ids: torch.Tensor  # (n,) allowed token ids
    dist: torch.Tensor  # (n,) characters still needed after each token
    next: dict[int, Any]  # token id -> next automaton state
    accepting: bool  # EOS allowed here


def token_texts(tokenizer: Any, vocab_size: int) -> list[str | None]:
    """Each id's text, or None for ids that can never be allowed (special, not standalone UTF-8, empty)."""
    specials = set(getattr(tokenizer, "special_tokens", {}).values()) if hasattr(tokenizer, "special_tokens") else set()
    out: list[str | None] = []
    for i in range(vocab_size):
        if i in specials:
            out.append(None)
            continue
        try:
            text = token_bytes(tokenizer, i).decode("utf-8")
        except (UnicodeDecodeError, KeyError, IndexError, ValueError):
            text = None
        out.append(text or None)
    return out


def build_trie(texts: list[str | None]) -> dict:
    """Character trie: node = {char: child, ...}; the ids ending at a node sit under the key None."""
    root: dict = {}
    for i, text in enumerate(texts):
        if text is None:
            continue
        node = root
        for ch in text:
            node = node.setdefault(ch, {})
        node.setdefault(None, []).append(i)
    return root


class TokenConstraint:
    def __init__(self, automaton: CharAutomaton, texts: list[str | None], eos_ids: list[int], device: str = "cpu"):
        if not eos_ids:
            raise ValueError("constrained decoding needs an EOS id (model eos_token_id or stop_token_ids)")
        self.fsm, self.V = automaton, len(texts)
        self.eos = torch.tensor(eos_ids, dtype=torch.long)
        self.trie = build_trie(texts)
        self.cache: dict[Any, StateEntry] = {}

    @classmethod
    def from_params(
        cls, params: SamplingParams, tokenizer: Any, vocab_size: int, eos_ids: list[int]
    ) -> TokenConstraint:
        return cls(automaton_for(params), token_texts(tokenizer, vocab_size), eos_ids)

    def start(self) -> Any:
        return self.fsm.start()

    def entry(self, state: Any) -> StateEntry:
        if state not in self.cache:
            self.cache[state] = self._walk(state)
        return self.cache[state]

    def _walk(self, state: Any) -> StateEntry:
        """Depth-first walk of the trie alongside the automaton, from `state`."""
        ids, dist, nxt = [], [], {}
        todo = [(self.trie, state)]
        while todo:
            node, s = todo.pop()
            for ch, child in node.items():
                if ch is None:
                    continue
                s2 = self.fsm.step(s, ch)
                if s2 is None:
                    continue
                for i in child.get(None, ()):
                    ids.append(i)
                    dist.append(self.fsm.distance(s2))
                    nxt[i] = s2
                todo.append((child, s2))
        return StateEntry(
            torch.tensor(ids, dtype=torch.long), torch.tensor(dist, dtype=torch.float), nxt, self.fsm.accepting(state)
        )

    def mask(self, state: Any, left: int) -> torch.Tensor:
        """(V,) bool: tokens allowed now, given `left` more tokens after this one."""
        e = self.entry(state)
        m = torch.zeros(self.V, dtype=torch.bool)
        m[e.ids[e.dist <= left]] = True
        if e.accepting or not m.any():  # accept, or give up cleanly if the budget is already too small
            m[self.eos] = True
        return m

    def masks(self, states: list[Any], left: int, device: torch.device | str) -> torch.Tensor:
        """(R, V) bool for a batch of row states."""
        return torch.stack([self.mask(s, left) for s in states]).to(device)

    def advance(self, state: Any, token: int) -> Any:
        e = self.entry(state)
        if token not in e.next:
            raise AssertionError(f"token {token} is not allowed in constraint state {state!r}")
        return e.next[token]


def automaton_for(params: SamplingParams) -> CharAutomaton:
    """The character automaton a request asks for."""
    from lmstack.generate.json_fsm import JsonAutomaton
    from lmstack.generate.json_schema import schema_to_regex
    from lmstack.generate.regex_fsm import RegexAutomaton

    if params.json_mode:
        return JsonAutomaton()
    if params.json_schema is not None:
        try:
            return RegexAutomaton(schema_to_regex(params.json_schema, "json_schema"))
        except ValueError as e:
            raise ValueError(f"json_schema: {e}") from None
    if params.choices is not None:
        return RegexAutomaton("(?:" + "|".join(re.escape(c) for c in params.choices) + ")")
    assert params.regex is not None
    return RegexAutomaton(params.regex)
