"""The decoding forward: `Transformer.forward`'s computation for prefill and decode steps, without module calls.

At batch 1 a decode step does almost no arithmetic besides one matrix-vector product per weight matrix, so on a
CPU its time goes to what surrounds them: ~15 `nn.Module.__call__`s per layer, each a few microseconds of
Python (hook checks, argument passing) before the op runs. `FastForward` gathers each layer's weights once per
`generate` call and runs the same ops (the same `F.*` calls the modules make, in the same order) in one flat
loop, so its logits equal `model(...)`'s (tests/generate/test_fast_forward.py checks every covered variant).

`decode_layout(model)` goes one step further for batch-1 CPU decoding, in place and without changing a value:
each block's q|k|v and gate|up projections share one matrix, so a layer runs 4 products instead of 7, stored the
way the step that runs it reads fastest: (out, in) row-major for the C decode step (`native_decode.py`), where it
covers the model; otherwise transposed, (in, out) row-major (MKL's fp32 matrix-vector product streams that layout
at ~1.6x the bandwidth of the usual (out, in) one on this machine, docs/generate.md). The modules keep their
parameters (now views into the shared matrices): state dicts, saving and training are unchanged. Quantized
projections (`QuantLinear`) keep their packed layout but are fused the same way (`quant.linear.concat_rows`):
one int8 / int4 kernel call for q|k|v and one for gate|up, which is what a batch-1 step saves most on.
`lmstack generate` / `chat` apply it to the model they load.

A `model.cache.RaggedBatch` (the serving engine's mixed steps) runs several differently shaped groups of rows in
one call: the projections and the FFN see all their tokens as one (1, N) row, attention runs per group.

Covered: pre-norm decoders (RMSNorm or LayerNorm; RoPE, learned, sinusoidal, ALiBi or no positions; MHA, GQA,
MQA; biases; QK-norm; sliding windows; SwiGLU or GELU FFN; tied or untied head) in eval mode, built only from
the modules listed in `KNOWN` and without hooks; `QuantLinear` projections (lmstack.quant) run their own fused
kernels, a `QuantEmbedding` (an int8 table shared with the head) its own lookup. Anything else (mixtures of
experts, post-norm, encoders, LoRA or NF4 layers, torch.compile'd or wrapped models, training mode) makes
`FastForward.of` return None and the caller runs `model(...)` as before. A new `ModelConfig` field that changes
the forward must be added here too, or be refused in `FastForward.of` (the parity tests cover each variant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.generate.cpu_threads import DecodeThreads
from lmstack.model.attention import Attention, SharedBias
from lmstack.model.cache import KVCache, RaggedBatch, Segment
from lmstack.model.causal_lm import CausalLM
from lmstack.model.ffn import GeluMLP, SwiGLU
from lmstack.model.norms import LayerNorm, RMSNorm
from lmstack.model.positions import RotaryEmbedding, apply_rope_signed, sinusoidal
from lmstack.model.transformer import Block, Transformer, check_ids, check_learned_positions
from lmstack.quant.embedding import QuantEmbedding
from lmstack.quant.linear import QuantLinear, concat_rows

KNOWN = (Transformer, Block, Attention, RMSNorm, LayerNorm, SwiGLU, GeluMLP, RotaryEmbedding, nn.ModuleList,
         nn.Linear, nn.Embedding, nn.Dropout, nn.Identity, QuantLinear, QuantEmbedding)  # fmt: skip
Linear = tuple[torch.Tensor, torch.Tensor | None]  # (weight (out, in), bias (out,) or None)
Proj = Callable[[torch.Tensor], torch.Tensor]  # (..., in) -> (..., out)
Logits = Callable[[torch.Tensor, torch.Tensor, KVCache, bool], torch.Tensor]


def fused(linears: list[nn.Module]) -> Proj | None:
    """The product by `decode_layout`'s shared matrix behind these projections, if it still backs them (a later
    `.to()`, load or module swap breaks the sharing; then the projections run one by one)."""
    shared = getattr(linears[0], "fused_with_next", None)
    if shared is None:
        return None
    if isinstance(shared[0], QuantLinear):  # `concat_rows`: each layer's packed weight is a row slice of it
        whole, offset = shared[0], 0
        for lin in linears:
            if type(lin) is not QuantLinear or lin.weight.data_ptr() != whole.weight[offset:].data_ptr():
                return None
            offset += lin.out_features
        return whole.forward if offset == whole.out_features else None
    w, b = shared
    offset, rows = 0, w.shape[0]
    for lin in linears:
        n = lin.out_features
        view_ok = lin.weight.data_ptr() == w[offset:].data_ptr() and lin.weight.stride() == w.stride()
        bias_ok = (b is None and lin.bias is None) or (
            b is not None and lin.bias is not None and lin.bias.data_ptr() == b[offset:].data_ptr()
        )
        if not (view_ok and bias_ok):
            return None
        offset += n
    if offset != rows:
        return None
    packed = getattr(linears[0], "onednn_weight", None)  # (packed copy, the versions it was made from)
    return _dense(w, b, packed[0] if packed is not None and packed[1] == _versions(linears) else None)


def _versions(linears: list[nn.Linear]) -> tuple[int, ...]:
    """The parameters' version counters: any in-place update (an optimizer step, an edit) bumps them."""
    return tuple(p._version for m in linears for p in (m.weight, m.bias) if p is not None)


def decode_layout(model: CausalLM, packed: bool = False, rows: bool | None = None) -> CausalLM:
    """Store each block's projections for decoding, q|k|v and gate|up fused, in place (values unchanged);
    quantized q|k|v and gate|up are fused too (packed layout kept).

    `rows`: keep each matrix (out, in) row-major, as nn.Linear does (fused by stacking rows). None (the default)
    chooses what the step that will run fastest reads: (out, in) where the C decode step covers the model and can
    be built here (`native_decode.py`: its dot products stream contiguous rows; in-process, its SmolLM2 step takes
    ~14 % less time than on the (in, out) layout), else (in, out) for MKL's matrix-vector product.

    `packed`: also keep a oneDNN-packed copy of every float matrix for `FastForward` (one more copy of the
    float weights in memory). oneDNN's blocked layout multiplies a few rows at once (batched decoding, prefill)
    2-4x faster than MKL's sgemm does on this CPU (docs/serve.md) and one row as fast; its sums run in another
    order, so logits move by ~1e-6 relative and no longer equal `model(...)` bit for bit. The copy is used
    only while the weights are unchanged (their version counters are checked when a `FastForward` is built).
    For a `Transformer` on the CPU; any other model is returned untouched. Returns the model."""
    if type(model) is not Transformer or next(model.parameters()).device.type != "cpu":
        return model
    if rows is None:
        from lmstack.generate.native_decode import NativeDecode, library  # it builds on this module

        rows = NativeDecode.supports(model) and library() is not None
    with torch.no_grad():
        for block in model.blocks:
            attn, ffn = block.attn, block.ffn
            groups = [[attn.q_proj, attn.k_proj, attn.v_proj], [attn.o_proj]]
            if type(ffn) is SwiGLU:
                groups += [[ffn.gate_proj, ffn.up_proj], [ffn.down_proj]]
            elif type(ffn) is GeluMLP:
                groups += [[ffn.up_proj], [ffn.down_proj]]
            for group in groups:
                if all(type(m) is nn.Linear for m in group):
                    _share(group, packed, rows)
                elif len(group) > 1 and all(type(m) is QuantLinear for m in group):
                    whole = concat_rows(group)  # one fused-kernel call (the packed rows stay as they are)
                    if whole is not None:
                        group[0].fused_with_next = (whole,)
        if type(model.lm_head) is nn.Linear:  # tied: the embedding table too (a lookup reads one strided row)
            _share([model.lm_head], packed, rows)
    return model


def packed_nbytes(model: nn.Module) -> int:
    """Bytes of the oneDNN-packed copies `decode_layout(packed=True)` added (0 if none)."""
    return sum(m.fused_with_next[0].nbytes for m in model.modules() if getattr(m, "onednn_weight", None) is not None)


def _share(linears: list[nn.Linear], packed: bool = False, rows: bool = False) -> None:
    """One matrix for all of them, (in, sum of out) row-major, each module's weight an (out, in) view of its
    columns; with `rows`, (sum of out, in) row-major, each weight a block of its rows. With `packed`, a
    oneDNN-packed copy of the whole goes beside it."""
    stacked = torch.cat([m.weight for m in linears])  # (out_total, in)
    storage = stacked if rows else stacked.t().contiguous()  # rows: (out_total, in); else (in, out_total)
    whole = storage if rows else storage.t()  # (out_total, in) either way
    biases = [m.bias for m in linears]
    bias = torch.cat(biases) if all(b is not None for b in biases) else None
    offset = 0
    for m in linears:
        n = m.out_features
        m.weight.data = whole[offset : offset + n]  # (out, in): contiguous rows, or strides (1, out_total)
        if bias is not None:
            m.bias.data = bias[offset : offset + n]
        offset += n
    linears[0].fused_with_next = (whole, bias)  # (out_total, in), (out_total,)
    if packed and storage.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        linears[0].onednn_weight = (
            torch.ops.mkldnn._reorder_linear_weight(whole.contiguous()),
            _versions(linears),
        )


@dataclass
class LayerWeights:
    attn_norm: Callable[[torch.Tensor], torch.Tensor]
    qkv: list[Proj]  # one fused (q|k|v) or three
    q_norm: Callable[[torch.Tensor], torch.Tensor] | None
    k_norm: Callable[[torch.Tensor], torch.Tensor] | None
    o: Proj
    ffn_norm: Callable[[torch.Tensor], torch.Tensor]
    gate_up: list[Proj]  # SwiGLU: one fused (gate|up) or two; GELU: [up]
    down: Proj
    gelu: str | None  # None for SwiGLU, else GELU's approximation ("none" | "tanh")
    layer: int


def _dense(w: torch.Tensor, b: torch.Tensor | None, packed: torch.Tensor | None = None) -> Proj:
    if packed is None:
        return lambda h: F.linear(h, w, b)
    onednn = torch.ops.mkldnn._linear_pointwise

    def product(h: torch.Tensor) -> torch.Tensor:  # oneDNN's linear on the packed copy of w
        y = onednn(h.reshape(-1, h.shape[-1]), packed, b, "none", [], "")
        return y.view(*h.shape[:-1], y.shape[-1])

    return product


def _lookup(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The token lookup as a plain function: `F.embedding` on an nn.Embedding's table, or a `QuantEmbedding`'s own
    `forward` (rows of an int8 table shared with the head, lmstack.quant.embedding)."""
    return m.forward if type(m) is QuantEmbedding else lambda ids: F.embedding(ids, m.weight)


def _proj(m: nn.Module) -> Proj:
    """The projection as a plain function: `F.linear` on an nn.Linear's tensors (or its packed copy), or a
    `QuantLinear`'s own `forward` (its fused int4 / int8 kernel) without the module call around it."""
    if type(m) is not nn.Linear:
        return m.forward
    return fused([m]) or _dense(m.weight, m.bias)


class FastForward:
    """`model(ids, positions, cache).logits` as a flat loop; build with `FastForward.of(model)`."""

    def __init__(self, model: Transformer) -> None:
        cfg = self.cfg = model.config
        self.model = model
        self.H, self.Hkv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.split = [cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim]
        self.layers = [self._layer(b) for b in model.blocks]
        self.head = _proj(model.lm_head)
        self.embed = _lookup(model.embed)

    def _layer(self, block: Block) -> LayerWeights:
        a, f = block.attn, block.ffn
        projections = [a.q_proj, a.k_proj, a.v_proj]
        qkv = fused(projections)
        if type(f) is SwiGLU:
            gate_up = fused([f.gate_proj, f.up_proj])
            gate_up = [gate_up] if gate_up is not None else [_proj(f.gate_proj), _proj(f.up_proj)]
        else:
            gate_up = [_proj(f.up_proj)]
        return LayerWeights(
            attn_norm=block.attn_norm.forward,
            qkv=[qkv] if qkv is not None else [_proj(m) for m in projections],
            q_norm=a.q_norm.forward if a.q_norm is not None else None,
            k_norm=a.k_norm.forward if a.k_norm is not None else None,
            o=_proj(a.o_proj),
            ffn_norm=block.ffn_norm.forward,
            gate_up=gate_up,
            down=_proj(f.down_proj),
            gelu=None if type(f) is SwiGLU else f.approx,
            layer=a.layer_idx,
        )

    @classmethod
    def of(cls, model: CausalLM) -> FastForward | None:
        """A FastForward for `model`, or None when it holds anything this path does not implement (see above)."""
        return cls(model) if cls.covers(model) else None

    @staticmethod
    def covers(model: CausalLM) -> bool:
        """Whether this path implements everything `model` holds (see above)."""
        if type(model) is not Transformer or model.training:
            return False
        cfg = model.config
        plain = (cfg.norm_placement == "pre" and cfg.causal and not cfg.n_experts and cfg.lm_head
                 and cfg.attention == "sdpa" and not cfg.type_vocab_size and not cfg.embed_norm)  # fmt: skip
        if not plain or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            return False
        return all(type(m) in KNOWN and not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, cache: KVCache, last_only: bool = False
    ) -> torch.Tensor:
        """input_ids, positions (B, T) -> logits (B, T, V), or (B, 1, V) for the last position with `last_only`
        (a prefill needs only those). Keys and values go through `cache` exactly as in `model(...)`."""
        m, cfg = self.model, self.cfg
        B, T = input_ids.shape
        check_ids(input_ids, cfg.vocab_size)
        x = self.embed(input_ids)  # (B, T, D)
        if m.pos_embed is not None:
            check_learned_positions(positions, cfg.max_seq_len)
            x = x + F.embedding(positions.clamp(min=0), m.pos_embed.weight)
        elif cfg.position == "sinusoidal":
            x = x + sinusoidal(positions.clamp(min=0), cfg.d_model).to(x.dtype)
        rope = m.rope.signed(positions, x.dtype) if m.rope is not None else None
        ragged = isinstance(cache, RaggedBatch)
        segments = cache.segments if ragged else [Segment(B, T, cache)]
        biases = [SharedBias() for _ in segments]
        for w in self.layers:
            x = x + self._attention(w, w.attn_norm(x), positions, rope, segments, biases)
            x = x + self._ffn(w, w.ffn_norm(x))
        if last_only:
            x = x[:, cache.last] if ragged else x[:, -1:]
        return self.head(m.norm(x))  # (B, T, V); a RaggedBatch: (1, N or R, V)

    def _attention(
        self,
        w: LayerWeights,
        h: torch.Tensor,
        positions: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        segments: list[Segment],
        biases: list[SharedBias],
    ) -> torch.Tensor:
        B, T, _ = h.shape
        H, Hkv = self.H, self.Hkv
        if len(w.qkv) == 1 and w.q_norm is None:  # the fused q|k|v row as heads: one view, one rotation of q|k
            heads = w.qkv[0](h).view(B, T, H + 2 * Hkv, self.hd).transpose(1, 2)  # (B, H + 2 Hkv, T, hd)
            qk, v = heads[:, : H + Hkv], heads[:, H + Hkv :]
            if rope is not None:  # elementwise per head: rotating q and k together gives the same values
                qk = apply_rope_signed(qk, *rope)
            q, k = qk[:, :H], qk[:, H:]
        else:
            if len(w.qkv) == 1:
                q, k, v = w.qkv[0](h).split(self.split, dim=-1)
            else:
                q, k, v = (p(h) for p in w.qkv)
            q = q.view(B, T, H, self.hd).transpose(1, 2)  # (B, H, T, hd)
            k = k.view(B, T, Hkv, self.hd).transpose(1, 2)  # (B, Hkv, T, hd)
            v = v.view(B, T, Hkv, self.hd).transpose(1, 2)
            if w.q_norm is not None:
                q, k = w.q_norm(q), w.k_norm(k)
            if rope is not None:
                q, k = apply_rope_signed(q, *rope), apply_rope_signed(k, *rope)
        if len(segments) == 1 and (segments[0].rows, segments[0].tokens) == (B, T):  # a plain batch
            out = self._sdpa(w, q, k, v, positions, segments[0].cache, biases[0])
            return w.o(out.transpose(1, 2).reshape(B, T, self.H * self.hd))  # (B, T, D)
        outs, start = [], 0  # a ragged batch: B = 1, T = every segment's tokens, one after another
        for seg, bias in zip(segments, biases):
            span, shape = slice(start, start + seg.rows * seg.tokens), (seg.rows, seg.tokens)
            q_s, k_s, v_s = (t[0, :, span].unflatten(1, shape).transpose(0, 1) for t in (q, k, v))  # (rows, H, T, hd)
            out = self._sdpa(w, q_s, k_s, v_s, positions[0, span].view(shape), seg.cache, bias)
            outs.append(out.transpose(1, 2).reshape(seg.rows * seg.tokens, self.H * self.hd))
            start = span.stop
        return w.o(torch.cat(outs)[None])  # (1, N, D)

    def _sdpa(
        self,
        w: LayerWeights,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        shared: SharedBias,
    ) -> torch.Tensor:
        """q (B, H, T, hd), the new k, v (B, Hkv, T, hd) -> attention output (B, H, T, hd) through `cache`."""
        k, v, k_pos = cache.update(w.layer, k, v, positions)  # (B, Hkv, S, hd), (B, S)
        cfg = self.cfg
        bias = shared.get(positions, k_pos, True, cfg.sliding_window, self.model.alibi, q.dtype, False)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=self.Hkv != self.H)

    def _ffn(self, w: LayerWeights, h: torch.Tensor) -> torch.Tensor:
        if w.gelu is not None:  # GELU MLP
            return w.down(F.gelu(w.gate_up[0](h), approximate=w.gelu))
        if len(w.gate_up) == 1:  # SwiGLU, gate|up fused
            gate, up = w.gate_up[0](h).chunk(2, dim=-1)
        else:
            gate, up = (p(h) for p in w.gate_up)
        return w.down(F.silu(gate) * up)


def forward_fn(model: CausalLM) -> Logits:
    """The fastest correct way to get logits from `model` with a cache: `FastForward` if it covers the model,
    else `model(...)`; decode steps on the thread count measured faster for this model (`cpu_threads.py`).
    Call it as `fn(ids, positions, cache, last_only)` -> logits (B, T or 1, V). Float32 calls of up to 16 new
    tokens (a decode step, a batched step, a verification) on the models it covers run in C (`native_decode.py`:
    one parallel region per forward)."""
    fast = FastForward.of(model)
    if fast is not None:
        from lmstack.generate.native_decode import NativeDecode  # it builds on this module

        native = NativeDecode.of(model)
        if native is not None:
            fast = _with_native_decode(fast, native)
    if fast is None:

        def fast(ids: torch.Tensor, positions: torch.Tensor, cache: KVCache, last_only: bool = False) -> torch.Tensor:
            logits = model(ids, positions=positions, cache=cache).logits
            return logits[:, -1:] if last_only else logits

    on_cpu = next(model.parameters()).device.type == "cpu"
    return DecodeThreads(model, fast) if on_cpu else fast


def _with_native_decode(fast: FastForward, native: object) -> Logits:
    """`native` for the calls it covers (`NativeDecode.covers`), `fast` for the rest."""

    def forward(ids: torch.Tensor, positions: torch.Tensor, cache: KVCache, last_only: bool = False) -> torch.Tensor:
        if native.covers(ids, cache):
            return native(ids, positions, cache, last_only)
        return fast(ids, positions, cache, last_only)

    return forward
