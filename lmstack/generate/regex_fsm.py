"""A regular-expression automaton over characters: parse -> Thompson NFA -> DFA built lazily, one state at a time.

Constrained decoding asks one question per token: starting from this state, does the token's text keep the
output a prefix of some match? A deterministic automaton answers it in one pass over the text. We compile the
regex into an NFA (Thompson 1968: one fragment per operator, epsilon edges between them) and determinize on
demand (subset construction, Rabin & Scott 1959): a DFA state is the epsilon-closed set of NFA states, created
only when the output reaches it, so `.*` or `[^"]{0,500}` never blow up memory.

`distance(state)` is the fewest characters that still reach a match (0-1 BFS over the NFA, backwards from the
accept state); constrained decoding uses it to close the output before `max_new_tokens` runs out.

Syntax (a subset of Python `re`, full-match semantics): literals, `.`, classes `[a-z0-9_]`, `[^...]`, escapes
`\\d \\D \\w \\W \\s \\S \\n \\t \\r \\xHH \\uHHHH` and escaped metacharacters, groups `( )` and `(?: )`,
alternation `|`, quantifiers `* + ? {m} {m,} {m,n}` (a trailing lazy `?` is accepted and ignored).
Left out: backreferences, lookaround, anchors other than a leading `^` / trailing `$`, flags, Unicode classes
beyond ASCII (`\\w` is [A-Za-z0-9_], `.` is any character except a newline).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_CODEPOINT = 0x10FFFF
# Counted repetition copies its operand (`a{2,5}` is aa(a(a(a)?)?)?), so `a{1,10000000}` would build 2e7 NFA states
# (gigabytes, minutes). Patterns whose NFA would exceed this many states are refused before anything is built.
MAX_NFA_STATES = 50_000


@dataclass(frozen=True)
class CharSet:
    ranges: tuple[tuple[int, int], ...]  # inclusive code point ranges
    negated: bool = False

    def __contains__(self, ch: str) -> bool:
        c = ord(ch)
        return any(lo <= c <= hi for lo, hi in self.ranges) != self.negated

    def example(self) -> str:
        """One character in the set (used by tests and by `distance`-guided completion)."""
        if not self.negated:
            return chr(self.ranges[0][0])
        return next(chr(c) for c in range(32, 0x3000) if chr(c) in self)


DIGIT = ((48, 57),)
WORD = ((48, 57), (65, 90), (95, 95), (97, 122))
SPACE = ((9, 13), (32, 32))
CLASS_ESCAPES = {"d": (DIGIT, False), "D": (DIGIT, True), "w": (WORD, False), "W": (WORD, True)}
CLASS_ESCAPES |= {"s": (SPACE, False), "S": (SPACE, True)}
CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}


# ---------------------------------------------------------------- parser: pattern -> AST (nested tuples)
# ("set", CharSet) | ("cat", [nodes]) | ("alt", [nodes]) | ("rep", node, min, max or None)


class Parser:
    def __init__(self, pattern: str) -> None:
        self.s, self.i = pattern, 0

    def error(self, msg: str) -> ValueError:
        return ValueError(f"regex {self.s!r}: {msg} at position {self.i}")

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def take(self) -> str:
        if self.i >= len(self.s):
            raise self.error("unexpected end")
        self.i += 1
        return self.s[self.i - 1]

    def parse(self) -> tuple:
        if self.peek() == "^":
            self.i += 1
        node = self.alternation()
        if self.peek() == "$" and self.i == len(self.s) - 1:
            self.i += 1
        if self.i != len(self.s):
            raise self.error(f"unexpected {self.s[self.i]!r}")
        return node

    def alternation(self) -> tuple:
        options = [self.concat()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.concat())
        return options[0] if len(options) == 1 else ("alt", options)

    def concat(self) -> tuple:
        items = []
        while self.peek() is not None and self.peek() not in "|)":
            if self.peek() == "$" and self.i == len(self.s) - 1:
                break
            items.append(self.repeat())
        return ("cat", items)

    def repeat(self) -> tuple:
        node = self.atom()
        while self.peek() is not None and self.peek() in "*+?{":
            c = self.take()
            if c == "{":
                lo, hi = self.braces()
            else:
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            node = ("rep", node, lo, hi)
            if self.peek() == "?":  # lazy: same language
                self.i += 1
        return node

    def braces(self) -> tuple[int, int | None]:
        end = self.s.find("}", self.i)
        if end < 0:
            raise self.error("unclosed {")
        body, self.i = self.s[self.i : end], end + 1
        lo, comma, hi = body.partition(",")
        try:
            low = int(lo) if lo else 0
            high = (int(hi) if hi else None) if comma else low
        except ValueError:
            raise self.error(f"bad repetition {{{body}}}") from None
        if high is not None and high < low:
            raise self.error(f"bad repetition {{{body}}}")
        return low, high

    def atom(self) -> tuple:
        c = self.take()
        if c == "(":
            if self.s.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("lookaround and group flags are not supported")
            node = self.alternation()
            if self.take() != ")":
                raise self.error("expected )")
            return node
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            return ("set", CharSet(((10, 10),), negated=True))
        if c == "\\":
            return ("set", self.escape())
        if c in "*+?{)|":
            raise self.error(f"nothing to repeat before {c!r}" if c in "*+?{" else f"unbalanced {c!r}")
        return ("set", CharSet(((ord(c), ord(c)),)))

    def escape(self) -> CharSet:
        c = self.take()
        if c in CLASS_ESCAPES:
            ranges, neg = CLASS_ESCAPES[c]
            return CharSet(ranges, neg)
        if c in "xu":
            n = 2 if c == "x" else 4
            hexa, self.i = self.s[self.i : self.i + n], self.i + n
            try:
                code = int(hexa, 16)
            except ValueError:
                raise self.error(f"bad \\{c} escape") from None
            return CharSet(((code, code),))
        ch = CHAR_ESCAPES.get(c, c)
        if c.isalnum() and c not in CHAR_ESCAPES:
            raise self.error(f"unsupported escape \\{c}")
        return CharSet(((ord(ch), ord(ch)),))

    def class_atom(self) -> int | CharSet:
        """One member of a [...] class: a code point, or a set for \\d / \\w / \\s."""
        c = self.take()
        if c != "\\":
            return ord(c)
        cs = self.escape()
        if cs.negated:
            raise self.error("negated escapes (\\D, \\W, \\S) inside [] are not supported")
        single = len(cs.ranges) == 1 and cs.ranges[0][0] == cs.ranges[0][1]
        return cs.ranges[0][0] if single else cs

    def char_class(self) -> CharSet:
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while first or self.peek() != "]":
            first = False
            lo = self.class_atom()
            if isinstance(lo, CharSet):
                ranges.extend(lo.ranges)
            elif self.peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.i += 1
                hi = self.class_atom()
                if isinstance(hi, CharSet) or hi < lo:
                    raise self.error("bad range in []")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        self.i += 1
        return CharSet(tuple(ranges), negated)


# ---------------------------------------------------------------- NFA (Thompson) and lazy DFA


@dataclass
class NFA:
    eps: list[list[int]] = field(default_factory=list)  # state -> epsilon successors
    edges: list[list[tuple[CharSet, int]]] = field(default_factory=list)  # state -> (charset, successor)

    def new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, node: tuple) -> tuple[int, int]:
        """Fragment for `node`: (entry, exit) states."""
        kind = node[0]
        s, e = self.new(), self.new()
        if kind == "set":
            self.edges[s].append((node[1], e))
        elif kind == "cat":
            cur = s
            for child in node[1]:
                a, b = self.build(child)
                self.eps[cur].append(a)
                cur = b
            self.eps[cur].append(e)
        elif kind == "alt":
            for child in node[1]:
                a, b = self.build(child)
                self.eps[s].append(a)
                self.eps[b].append(e)
        else:  # rep: `lo` mandatory copies, then (hi - lo) optional ones, or a loop when hi is None
            _, child, lo, hi = node
            cur = s
            for _ in range(lo):
                a, b = self.build(child)
                self.eps[cur].append(a)
                cur = b
            if hi is None:
                a, b = self.build(child)
                self.eps[cur] += [a, e]
                self.eps[b] += [a, e]
            else:
                for _ in range(hi - lo):
                    a, b = self.build(child)
                    self.eps[cur] += [a, e]
                    cur = b
            self.eps[cur].append(e)
        return s, e


def nfa_size(node: tuple) -> int:
    """NFA states `NFA.build` would create for `node`, computed without building anything."""
    kind = node[0]
    if kind == "set":
        return 2
    if kind in ("cat", "alt"):
        return 2 + sum(nfa_size(child) for child in node[1])
    _, child, lo, hi = node
    copies = lo + (1 if hi is None else hi - lo)
    return 2 + copies * nfa_size(child)


class RegexAutomaton:
    """Character automaton for a full match of `pattern`. States are frozensets of NFA states (hashable)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        ast = Parser(pattern).parse()
        size = nfa_size(ast)
        if size > MAX_NFA_STATES:
            shown = pattern if len(pattern) <= 80 else pattern[:77] + "..."
            raise ValueError(f"regex {shown!r} is too large to constrain decoding: its automaton would have "
                             f"{size:,} states (limit {MAX_NFA_STATES:,}); lower the repetition counts")  # fmt: skip
        self.nfa = NFA()
        self.entry, self.accept = self.nfa.build(ast)
        self._dist = self._distances()
        self._step: dict[tuple[frozenset, str], frozenset | None] = {}
        self._start = self._closure({self.entry})

    def _closure(self, states: set[int]) -> frozenset:
        todo, seen = list(states), set(states)
        while todo:
            for t in self.nfa.eps[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return frozenset(seen)

    def _distances(self) -> list[float]:
        """Fewest characters from each NFA state to the accept state (0-1 BFS on reversed edges)."""
        n = len(self.nfa.eps)
        rev: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for a in range(n):
            for b in self.nfa.eps[a]:
                rev[b].append((a, 0))
            for _, b in self.nfa.edges[a]:
                rev[b].append((a, 1))
        dist = [float("inf")] * n
        dist[self.accept] = 0
        dq = deque([self.accept])
        while dq:
            b = dq.popleft()
            for a, w in rev[b]:
                if dist[b] + w < dist[a]:
                    dist[a] = dist[b] + w
                    dq.appendleft(a) if w == 0 else dq.append(a)
        return dist

    def start(self) -> frozenset:
        return self._start

    def step(self, state: frozenset, ch: str) -> frozenset | None:
        key = (state, ch)
        if key not in self._step:
            nxt = {b for a in state for cs, b in self.nfa.edges[a] if ch in cs}
            self._step[key] = self._closure(nxt) if nxt else None
        return self._step[key]

    def accepting(self, state: frozenset) -> bool:
        return self.accept in state

    def distance(self, state: frozenset) -> float:
        return min(self._dist[s] for s in state)

    def can_continue(self, state: frozenset) -> bool:
        return any(self.nfa.edges[a] for a in state)

    def matches(self, text: str) -> bool:
        state: frozenset | None = self._start
        for ch in text:
            state = self.step(state, ch)
            if state is None:
                return False
        return self.accepting(state)
