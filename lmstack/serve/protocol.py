"""The OpenAI API's request bodies as pydantic models, and their translation to `SamplingParams`.

Field names and ranges follow the OpenAI API reference (platform.openai.com/docs/api-reference: completions and
chat completions). Validation is strict, as OpenAI's is: a string where a number belongs, a float where an
integer belongs, or an unknown field is a 400 naming the field, never a silent coercion. Parameters that OpenAI
has and lmstack does not serve (tools, function calling, `suffix`, `best_of` != n) are accepted by name and
refused with a clear message if set. Extensions beyond OpenAI use `SamplingParams`' own names (`top_k`,
`min_p`, `typical_p`, `repetition_penalty`, `no_repeat_ngram_size`, `min_tokens`, `ignore_eos`,
`stop_token_ids`, `regex`, `choices`); the `openai` client sends them with `extra_body=`. Chat requests may also
ask for a grounded answer from the server's collection with `"retrieval": true` or `{"k": 3, ...}` (retrieval.py),
and `/v1/embeddings` takes `truncate` (embeddings.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmstack.generate.params import SamplingParams


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False  # one last chunk with token counts


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str = "response"
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class SamplingFields(BaseModel):
    """What completions and chat share."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    n: int = Field(1, ge=1, le=16)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None  # accepted, unused
    # extensions (SamplingParams names)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0, le=1)
    typical_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    no_repeat_ngram_size: int = Field(0, ge=0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    regex: str | None = None
    choices: list[str] | None = None

    def sampling_params(self, max_tokens: int, vocab_size: int, stop_ids: list[int]) -> SamplingParams:
        """The SamplingParams this request asks for (ValueError naming the field otherwise)."""
        bias = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.isdigit() or int(key) >= vocab_size:
                raise ValueError(f"logit_bias: key {key!r} is not a token id in [0, {vocab_size})")
            if not -100 <= value <= 100:
                raise ValueError(f"logit_bias: value {value} for token {key} is outside [-100, 100]")
            bias[int(key)] = value
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 16 or any(not s for s in stop):
            raise ValueError("stop: up to 16 non-empty strings")
        fmt = self.response_format
        schema = None
        if fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None or fmt.json_schema.json_schema is None:
                raise ValueError("response_format: type json_schema needs json_schema.schema")
            schema = fmt.json_schema.json_schema
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            typical_p=self.typical_p,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            min_new_tokens=self.min_tokens,
            logit_bias=bias,
            stop=stop,
            stop_token_ids=sorted(set(stop_ids) | set(self.stop_token_ids or [])),
            ignore_eos=self.ignore_eos,
            seed=self.seed,
            n=self.n,
            json_mode=fmt is not None and fmt.type == "json_object",
            json_schema=schema,
            regex=self.regex,
            choices=self.choices,
        )


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    echo: bool = False  # prepend the prompt to the text
    logprobs: int | None = Field(None, ge=0, le=20)  # top tokens per position
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    def problem(self) -> str | None:
        """Why the request cannot be served (a 400), or None."""
        if self.suffix:
            return "suffix (insertion) is not supported"
        if self.best_of is not None and self.best_of != self.n:
            return "best_of != n is not supported"
        return None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class RetrievalOptions(BaseModel):
    """The `retrieval` field of a chat request: answer the last user message from the server's collection."""

    model_config = ConfigDict(extra="forbid", strict=True)
    k: int | None = Field(None, ge=1, le=20)  # sources in the prompt (default: the server's --rag_k)
    mode: Literal["bm25", "dense", "hybrid"] | None = None  # default: the server's --rag_mode
    where: dict[str, Any] | None = None  # metadata filter, e.g. {"path": "library/*"}
    min_score: float | None = Field(None, ge=-1, le=1)  # abstain below this best dense cosine (default: server's)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage]
    retrieval: RetrievalOptions | None = None  # extension: grounded answer with numbered, checked sources
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    functions: list[dict[str, Any]] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None

    def problem(self) -> str | None:
        """Why the request cannot be served (a 400), or None."""
        if self.tools or self.functions or self.tool_choice not in (None, "none") or self.function_call:
            return "tools / function calling are not supported"
        if not self.messages:
            return "messages: expected at least one message"
        if self.retrieval is not None and self.n != 1:
            return "retrieval: needs n = 1 (citations are checked for one answer)"
        return None

    @field_validator("retrieval", mode="before")
    @classmethod
    def _retrieval_flag(cls, value: Any) -> Any:
        """`true` = retrieval with the server's defaults, `false` = none (so errors name e.g. `retrieval.k`)."""
        return {} if value is True else None if value is False else value


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings` (embeddings.py)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    input: str | list[str] | list[int] | list[list[int]]  # token arrays are recognized only to refuse them clearly
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None  # accepted, unused
    truncate: bool = False  # extension: cut texts longer than the model's window instead of refusing them
