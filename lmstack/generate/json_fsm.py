"""JSON mode: an incremental JSON recognizer (a pushdown automaton) whose states are small hashable tuples.

JSON nests, so no finite automaton recognizes it; a stack of open containers does (ECMA-404 / RFC 8259
grammar). The state is (stack, mode, aux): `stack` the open containers ("o" object, "a" array), `mode` where we
are in the grammar, `aux` the little extra a mode needs (inside a key or a value string, hex digits left in a
\\uXXXX escape, letters left in a literal, the part of a number). `step(state, ch)` returns the next state or
None when `ch` cannot continue any valid document, so a prefix is accepted iff it is a prefix of some JSON text.

The top level must be an object (like OpenAI's JSON mode): the document is complete when its outer `}` closes,
and nothing may follow. `distance(state)` is the fewest characters that complete the document (close the string,
literal or number, then every open container), used to finish before `max_new_tokens` runs out.
Left out: duplicate-key checks, top-level scalars/arrays, nesting limits (a budget bounds depth in practice).
"""

from __future__ import annotations

WS = " \t\n\r"
DIGITS = "0123456789"
HEX = "0123456789abcdefABCDEF"
LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
NUMBER_ENDS = {"0", "int", "frac", "exp"}  # number parts where the number may end

State = tuple  # (stack: tuple[str, ...], mode: str, aux)


class JsonAutomaton:
    def start(self) -> State:
        return ((), "start", None)

    def accepting(self, state: State) -> bool:
        return state[1] == "done"

    def can_continue(self, state: State) -> bool:
        return state[1] != "done"

    def distance(self, state: State) -> int:
        stack, mode, aux = state
        close = len(stack)  # one } or ] per open container
        if mode in ("str", "esc"):  # key: closing quote, ':' and a value '0'; value: the quote
            return (3 if aux else 1) + (mode == "esc") + close
        if mode == "uni":
            return aux[1] + (3 if aux[0] else 1) + close
        if mode == "num":
            return (0 if aux in NUMBER_ENDS else 1) + close
        if mode == "lit":
            return len(aux) + close
        fixed = {"start": 2, "done": 0, "after": 0, "value": 1, "arr0": 0, "obj0": 0, "key": 4, "colon": 2}
        return fixed[mode] + close  # start: {}  value: 0  key: "":0  colon: :0

    def step(self, state: State, ch: str) -> State | None:
        stack, mode, aux = state
        if mode == "start":
            return (("o",), "obj0", None) if ch == "{" else None
        if mode == "done":
            return None
        if mode in ("str", "esc", "uni"):
            return _string(stack, mode, aux, ch)
        if mode == "num":
            nxt = _number(aux, ch)
            if nxt is not None:
                return (stack, "num", nxt)
            return self.step((stack, "after", None), ch) if aux in NUMBER_ENDS else None
        if mode == "lit":
            if not aux or ch != aux[0]:
                return None
            return (stack, "lit", aux[1:]) if len(aux) > 1 else (stack, "after", None)
        if ch in WS:
            return state
        if mode in ("obj0", "key"):
            if ch == '"':
                return (stack, "str", True)
            return _close(stack, ch) if mode == "obj0" else None
        if mode == "colon":
            return (stack, "value", None) if ch == ":" else None
        if mode in ("value", "arr0"):
            if mode == "arr0" and ch == "]":
                return _close(stack, ch)
            return _value(stack, ch)
        if mode == "after":
            if ch == ",":
                return (stack, "key", None) if stack[-1] == "o" else (stack, "value", None)
            return _close(stack, ch)
        raise AssertionError(f"unknown JSON state {state}")

    def matches(self, text: str) -> bool:
        state: State | None = self.start()
        for ch in text:
            state = self.step(state, ch)
            if state is None:
                return False
        return self.accepting(state)


def _value(stack: tuple, ch: str) -> State | None:
    """First character of a value."""
    if ch == "{":
        return (stack + ("o",), "obj0", None)
    if ch == "[":
        return (stack + ("a",), "arr0", None)
    if ch == '"':
        return (stack, "str", False)
    if ch in LITERALS:
        return (stack, "lit", LITERALS[ch])
    if ch == "-":
        return (stack, "num", "-")
    if ch in DIGITS:
        return (stack, "num", "0" if ch == "0" else "int")
    return None


def _close(stack: tuple, ch: str) -> State | None:
    if not stack or ch != {"o": "}", "a": "]"}[stack[-1]]:
        return None
    rest = stack[:-1]
    return (rest, "after", None) if rest else ((), "done", None)


def _string(stack: tuple, mode: str, aux: object, ch: str) -> State | None:
    """Inside a string; aux = is_key (str, esc) or (is_key, hex digits left) (uni)."""
    if mode == "str":
        if ch == '"':
            return (stack, "colon", None) if aux else (stack, "after", None)
        if ch == "\\":
            return (stack, "esc", aux)
        return None if ord(ch) < 0x20 else (stack, "str", aux)
    if mode == "esc":
        if ch == "u":
            return (stack, "uni", (aux, 4))
        return (stack, "str", aux) if ch in '"\\/bfnrt' else None
    is_key, left = aux  # type: ignore[misc]
    if ch not in HEX:
        return None
    return (stack, "uni", (is_key, left - 1)) if left > 1 else (stack, "str", is_key)


def _number(part: str, ch: str) -> str | None:
    """Next number part after `ch`, or None if `ch` does not extend the number (RFC 8259 number grammar)."""
    if ch in DIGITS:
        return {"-": "0" if ch == "0" else "int", "int": "int", ".": "frac", "frac": "frac"}.get(
            part, "exp" if part in ("e", "esign", "exp") else None
        )
    if ch == "." and part in ("0", "int"):
        return "."
    if ch in "eE" and part in ("0", "int", "frac"):
        return "e"
    if ch in "+-" and part == "e":
        return "esign"
    return None
