"""The fused decoding path for Llama-shaped models: our own forward, packed GQA, fused projections,
sampling inside the top-k, an optional `torch.compile` of the step, and (on CUDA) one captured graph.

Why (issue 18, NOTES.md): one decode step of SmolLM2-135M through transformers issues ~1,330 aten ops,
and at ~3 us a kernel that is the 4.3 ms step measured on the H200; the weights and KV cache stream in
~0.22 ms. Only fewer, larger kernels close the gap, so this module computes the step itself:

- **Fused projections.** q, k, v are one GEMM against the rows [W_q; W_k; W_v] concatenated once when
  the decoder is built, and gate/up one GEMM against [W_gate; W_up]; o, down, the norms and the
  embedding are the model's own tensors (shared, not copied).
- **Packed GQA.** With G = heads / kv_heads, the queries of one kv group are viewed as [B, KV, G*T, D]
  and multiplied by that group's keys directly: no `repeat_kv` copy of K/V (transformers' SDPA path
  falls back to `repeat_kv` under torch.compile, and SDPA's `enable_gqa` with a mask runs the math
  kernel, which repeats K/V too). `attention="sdpa"` calls SDPA with `enable_gqa=True` instead, for
  comparison on the GPU.
- **Sampling inside the top-k.** With top_k set: `topk` over the vocabulary, then temperature, top-p,
  softmax and the exponential race (argmax of p / E, E ~ Exp(1)) over [B, k] only, instead of masked
  passes over [B, V]. Without top_k the full-vocabulary filter of components.generation.static runs.
  The Exp(1) noise is drawn eagerly *before* the compiled step and handed to it, so the compiled code
  holds no random op: Inductor's own RNG lowering cannot freeze draws across graph replays, eager CUDA
  RNG inside a captured graph advances its Philox offset at every replay, and a compiled and an eager
  step draw the same tokens from the same seed.
- **Compilation.** `compile="default"` or `"max-autotune-no-cudagraphs"` runs the step through
  Inductor (`fullgraph=True`, `dynamic=False`); the compiled step is what our own CUDA graph captures
  (modes that capture graphs themselves, "reduce-overhead" and "max-autotune", are refused: they must
  not be nested in a manual capture). The step function is compiled once per architecture and
  sampling setting and shared by every decoder of the process; tensors are arguments, so a new decoder
  of the same shape reuses the compiled code. `first_step_seconds` reports the first step's time
  (compilation included when this shape is new); TORCHINDUCTOR_CACHE_DIR defaults to
  `<model cache>/inductor` so later processes load the compiled kernels instead of rebuilding them.
  Shapes are static: each new (batch size, cache length) compiles again, so a caller decoding many
  batches should size one decoder for all of them (the longest prompt) rather than one per batch.

The numerics follow transformers' Llama (RMSNorm in float32 cast back, rotary cos/sin computed in
float32 and cast to the model dtype, softmax in float32), so greedy decoding in float32 gives the
tokens `generate` gives (tests/components/test_generation_fused.py). Everything else (left padding,
the additive mask over cache columns, position ids counting real tokens, EOS bookkeeping, the CUDA
graph) is StaticDecoder's (components.generation.static), which this class extends.

The concatenated weights are copies taken at construction: a decoder kept across optimizer steps
decodes with the old q/k/v and gate/up weights until `refresh_weights()` (which writes in place, so a
captured graph stays valid). decode_batches and SCRG build a decoder per call, which is always fresh.

Example::

    decoder = FusedDecoder(model, batch_size=8, max_len=256, sampling=Sampling(do_sample=True, top_k=50),
                           eos=[2], pad_id=0, compile="default")
    tokens = decoder.generate(prompt_ids, max_new_tokens=64)   # list of token lists, EOS kept
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from components.generation.static import Sampling, StaticDecoder, filtered_scores, supports_static

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
NESTED_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # they capture CUDA graphs themselves
UNSUPPORTED_ROPE = ("dynamic", "longrope")  # inv_freq changes with the sequence length
RECOMPILE_LIMIT = 64  # compiled variants of the step per process (batch, cache length, dtype, sampling)


class LayerWeights(NamedTuple):
    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(heads + 2 kv_heads) * head_dim, hidden], rows W_q; W_k; W_v
    qkv_bias: torch.Tensor | None
    o: torch.Tensor  # [hidden, heads * head_dim]
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * intermediate, hidden], rows W_gate; W_up
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor  # [hidden, intermediate]
    down_bias: torch.Tensor | None


class HeadWeights(NamedTuple):
    embed: torch.Tensor  # [V, hidden]
    norm: torch.Tensor  # [hidden]
    lm_head: torch.Tensor  # [V, hidden]
    lm_head_bias: torch.Tensor | None


@dataclass(frozen=True)
class Arch:
    """The static facts of one model the step is specialised on (part of the compiled function's key)."""

    heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    eps: float
    act: str
    attention: str = "grouped"  # grouped (packed matmuls) | sdpa (enable_gqa=True)


def supports_fused(model) -> str | None:
    """None when the fused path can run this model, else the reason it cannot."""
    reason = supports_static(model)
    if reason:
        return reason
    if model.config.model_type != "llama" or not hasattr(model, "lm_head"):
        return f"the fused path implements Llama only, not {model.config.model_type!r}"
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope in UNSUPPORTED_ROPE:
        return f"rope_type={rope!r} rescales positions with the sequence length"
    if getattr(model.config, "pretraining_tp", 1) > 1:
        return "pretraining_tp > 1"
    return None


def _bias(*linears) -> torch.Tensor | None:
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias.detach() for lin in linears])


@torch.no_grad()
def fuse_weights(model, attention: str = "grouped") -> tuple[Arch, list[LayerWeights], HeadWeights]:
    """The model's weights as the fused step reads them: qkv and gate/up concatenated (new tensors),
    everything else the model's own tensors (detached, same storage)."""
    if attention not in ("grouped", "sdpa"):
        raise ValueError(f"attention must be grouped or sdpa, got {attention!r}")
    cfg = model.config
    first = model.model.layers[0].self_attn
    arch = Arch(heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads, head_dim=first.head_dim,
                scaling=float(first.scaling), eps=float(cfg.rms_norm_eps), act=cfg.hidden_act, attention=attention)
    layers = []
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        layers.append(LayerWeights(
            input_norm=layer.input_layernorm.weight.detach(),
            qkv=torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
            qkv_bias=_bias(a.q_proj, a.k_proj, a.v_proj),
            o=a.o_proj.weight.detach(), o_bias=_bias(a.o_proj),
            post_norm=layer.post_attention_layernorm.weight.detach(),
            gate_up=torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach(),
            gate_up_bias=_bias(m.gate_proj, m.up_proj),
            down=m.down_proj.weight.detach(), down_bias=_bias(m.down_proj),
        ))
    head = HeadWeights(embed=model.model.embed_tokens.weight.detach(), norm=model.model.norm.weight.detach(),
                       lm_head=model.lm_head.weight.detach(), lm_head_bias=_bias(model.lm_head))
    return arch, layers, head


def rotary_tables(model, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, head_dim] for positions 0..length-1, computed as LlamaRotaryEmbedding does
    (float32 product and cos/sin, times attention_scaling, cast to the model dtype)."""
    rotary = model.model.rotary_emb
    dtype = model.model.embed_tokens.weight.dtype
    inv_freq = rotary.inv_freq.float()
    freqs = torch.arange(length, device=inv_freq.device).float()[:, None] * inv_freq[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * rotary.attention_scaling).to(dtype), (emb.sin() * rotary.attention_scaling).to(dtype)


# ------------------------------------------------------------------------------------ the forward
def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _attend(arch: Arch, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q [B, H, T, D] over the cache k, v [B, KV, S, D] with the additive float32 mask [B, 1, T, S];
    returns [B, T, H * D]."""
    b, h, t, d = q.shape
    if arch.attention == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=arch.scaling,
                                             enable_gqa=True)
        return out.transpose(1, 2).reshape(b, t, h * d)
    kv, s = k.shape[1], k.shape[2]
    g = h // kv
    # query head j*G + i reads kv head j (repeat_kv's layout): group the queries, not the keys
    qg = q.reshape(b, kv, g * t, d)
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * arch.scaling  # [B, KV, G*T, S]
    scores = scores.view(b, kv, g, t, s) + mask[:, :, None]
    probs = scores.softmax(-1).to(q.dtype).view(b, kv, g * t, s)
    out = torch.matmul(probs, v).view(b, kv, g, t, d)  # [B, KV, G, T, D]
    return out.permute(0, 3, 1, 2, 4).reshape(b, t, h * d)


def forward_last(arch: Arch, layers: list[LayerWeights], head: HeadWeights, ids: torch.Tensor,
                 cos: torch.Tensor, sin: torch.Tensor, columns: torch.Tensor, mask: torch.Tensor,
                 keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """Run ids [B, T] (rotary cos/sin [B, T, D] of their positions) into cache columns `columns` [T]
    of keys/values (per layer [B, KV, S, D], written in place) and return the last position's logits [B, V]."""
    b, t = ids.shape
    act = ACT2FN[arch.act]
    q_size, kv_size = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, D]
    x = F.embedding(ids, head.embed)
    for w, k_cache, v_cache in zip(layers, keys, values, strict=True):
        qkv = F.linear(_rms(x, w.input_norm, arch.eps), w.qkv, w.qkv_bias)
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        q = _rotate(q.view(b, t, arch.heads, arch.head_dim).transpose(1, 2), cos, sin)
        k = _rotate(k.view(b, t, arch.kv_heads, arch.head_dim).transpose(1, 2), cos, sin)
        k_cache.index_copy_(2, columns, k)
        v_cache.index_copy_(2, columns, v.view(b, t, arch.kv_heads, arch.head_dim).transpose(1, 2))
        x = x + F.linear(_attend(arch, q, k_cache, v_cache, mask), w.o, w.o_bias)
        gate, up = F.linear(_rms(x, w.post_norm, arch.eps), w.gate_up, w.gate_up_bias).chunk(2, dim=-1)
        x = x + F.linear(act(gate) * up, w.down, w.down_bias)
    return F.linear(_rms(x[:, -1], head.norm, arch.eps), head.lm_head, head.lm_head_bias)


# ------------------------------------------------------------------------------------ sampling
def noise_width(sampling: Sampling, vocab: int) -> int:
    """Columns of Exp(1) noise one draw needs: k inside the top-k, the vocabulary otherwise."""
    return min(sampling.top_k, vocab) if sampling.top_k else vocab


def choose_topk(logits: torch.Tensor, sampling: Sampling, noise: torch.Tensor | None) -> torch.Tensor:
    """Next token per row from [B, V] logits: the argmax, or a draw with the given Exp(1) noise
    [B, noise_width] from temperature -> top-k -> top-p, as transformers' warpers filter.

    With top_k the filtering and the race run over the k largest logits only: softmax over the k kept
    scores is the full-vocabulary softmax with the rest at -inf, and top-p over the k sorted scores
    drops what TopPLogitsWarper drops (the others carry no mass). Ties at the k-th logit keep exactly k
    tokens here where TopKLogitsWarper keeps every tied one."""
    if not sampling.do_sample:
        return logits.argmax(-1)
    race = noise.clamp_min(torch.finfo(noise.dtype).tiny)  # an exact 0 would win with probability 0 mass
    if not sampling.top_k:
        probs = filtered_scores(logits, sampling).softmax(-1)
        return (probs / race).argmax(-1)
    values, index = logits.topk(noise.shape[-1], dim=-1)  # descending
    scores = values.float() / sampling.temperature
    if sampling.top_p < 1.0:
        ascending = scores.flip(-1)
        drop = ascending.softmax(-1).cumsum(-1) <= 1 - sampling.top_p
        drop[:, -1] = False  # the most likely token stays
        scores = scores.masked_fill(drop.flip(-1), float("-inf"))
    pick = (scores.softmax(-1) / race).argmax(-1, keepdim=True)
    return index.gather(-1, pick)[:, 0]


# ------------------------------------------------------------------------------------ the step
def _make_step(arch: Arch, sampling: Sampling, pad_id: int):
    def step(layers, head, keys, values, cos_table, sin_table, mask, tokens, positions, column, done, out,
             written, eos, noise):
        """One decoding step, all in place: unmask `column`, feed `tokens`, choose, record, advance."""
        mask.index_fill_(-1, column, 0.0)
        logits = forward_last(arch, layers, head, tokens, cos_table[positions], sin_table[positions], column,
                              mask, keys, values)
        nxt = choose_topk(logits, sampling, noise)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out.index_copy_(1, written, nxt[:, None])
        done |= (nxt[:, None] == eos[None]).any(-1)
        tokens.copy_(nxt[:, None])
        positions.add_(1)
        column.add_(1)
        written.add_(1)

    return step


_STEPS: dict[tuple, object] = {}  # (arch, sampling, pad_id, mode) -> step function (compiled or not)


def decode_step(arch: Arch, sampling: Sampling, pad_id: int, mode: str | None):
    """The step function for these static facts, compiled with Inductor when `mode` is set; one per
    process and key, so decoders of the same shape share the compiled code."""
    key = (arch, sampling, pad_id, mode)
    if key not in _STEPS:
        step = _make_step(arch, sampling, pad_id)
        if mode is not None:
            # every (shape, sampling) variant is one more compiled entry of the same code object; past
            # Dynamo's default of 8 it would silently run eagerly
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        _STEPS[key] = step if mode is None else torch.compile(step, fullgraph=True, dynamic=False, mode=mode)
    return _STEPS[key]


def default_compile_cache() -> Path:
    """Where Inductor keeps compiled kernels unless TORCHINDUCTOR_CACHE_DIR says otherwise."""
    from components.models.loading import DEFAULT_CACHE

    return DEFAULT_CACHE / "inductor"


class FusedDecoder(StaticDecoder):
    """StaticDecoder with the fused Llama step (see the module docstring); same public API.

    compile: None = "default" on CUDA and eager elsewhere; False or "none" = eager; or one of
    COMPILE_MODES. attention: "grouped" (packed GQA matmuls) or "sdpa" (enable_gqa=True).
    compile_cache: TORCHINDUCTOR_CACHE_DIR when the environment does not set it (default
    <model cache>/inductor)."""

    def __init__(self, model, batch_size: int, max_len: int, sampling: Sampling, eos: list[int], pad_id: int,
                 use_graph: bool | None = None, compile: str | bool | None = None, attention: str = "grouped",
                 compile_cache: str | Path | None = None):
        reason = supports_fused(model)
        if reason:
            raise ValueError(f"the fused decoding path cannot run this model: {reason}")
        self.arch, self.layers, self.head = fuse_weights(model, attention)
        super().__init__(model, batch_size, max_len, sampling, eos, pad_id, use_graph)
        device = model.device
        self.compile_mode = _compile_mode(compile, device)
        if self.compile_mode in NESTED_GRAPH_MODES and self.use_graph:
            raise ValueError(f"compile mode {self.compile_mode!r} captures CUDA graphs itself and must not be nested "
                             f"in the decoder's capture: use one of {COMPILE_MODES}")
        if self.compile_mode is not None:
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache or default_compile_cache()))
        # attention adds this mask to float32 scores; its value stays finite in the model dtype so SDPA's
        # cast cannot turn a fully masked (padding) query row into NaN
        self.mask = torch.full((batch_size, 1, 1, max_len), self.neg, dtype=torch.float32, device=device)
        self.cos, self.sin = rotary_tables(model, max_len)
        vocab = self.head.lm_head.shape[0]
        self.noise = torch.ones((batch_size, noise_width(sampling, vocab)), dtype=torch.float32, device=device)
        self._fn = decode_step(self.arch, sampling, pad_id, self.compile_mode)
        self.first_step_seconds: float | None = None

    def _new_cache(self, max_len: int):
        kv, d = self.arch.kv_heads, self.arch.head_dim
        like = self.head.embed
        shape = (self.batch_size, kv, max_len, d)
        self.keys = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in self.layers]
        return None

    @torch.no_grad()
    def refresh_weights(self) -> None:
        """Copy the model's current q/k/v and gate/up weights into the fused tensors (after training)."""
        _, layers, _ = fuse_weights(self.model, self.arch.attention)
        for mine, fresh in zip(self.layers, layers, strict=True):
            for a, b in zip(mine, fresh, strict=True):
                if a is not None and a.data_ptr() != b.data_ptr():
                    a.copy_(b)

    # ------------------------------------------------------------------------------------ the step
    def _step(self) -> None:
        if self.sampling.do_sample:
            self.noise.exponential_()  # eager, outside the compiled code (see the module docstring)
        first = self.first_step_seconds is None
        if first:
            self._sync()
            start = time.perf_counter()
        self._fn(self.layers, self.head, self.keys, self.values, self.cos, self.sin, self.mask, self.tokens,
                 self.positions, self.column, self.done, self.out, self.written, self.eos, self.noise)
        if first:
            self._sync()
            self.first_step_seconds = time.perf_counter() - start

    def _sync(self) -> None:
        if self.tokens.device.type == "cuda":
            torch.cuda.synchronize(self.tokens.device)

    def _state(self) -> list[torch.Tensor]:
        return [self.mask, self.tokens, self.positions, self.column, self.done, self.out, self.written]

    def _first_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        if self.sampling.do_sample:
            self.noise.exponential_()
        return choose_topk(logits, self.sampling, self.noise)

    def _set_length(self, width: int) -> None:  # the column tensor is the only length this cache has
        pass

    # ------------------------------------------------------------------------------------- filling
    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Run left-padded prompts [B, P] (valid: bool [B, P]) into the cache (eagerly, any P); return
        the last logits [B, V]."""
        b, width = ids.shape
        if b != self.batch_size or width >= self.max_len:
            raise ValueError(f"prefill of {tuple(ids.shape)} does not fit a decoder of {self.batch_size} x {self.max_len}")
        causal = torch.ones(width, self.max_len, dtype=torch.bool, device=ids.device).tril()
        allowed = causal[None] & F.pad(valid, (0, self.max_len - width))[:, None, :]
        mask = torch.zeros(b, 1, width, self.max_len, dtype=torch.float32, device=ids.device)
        mask.masked_fill_(~allowed[:, None], self.neg)
        positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
        columns = torch.arange(width, device=ids.device)
        logits = forward_last(self.arch, self.layers, self.head, ids, self.cos[positions], self.sin[positions],
                              columns, mask, self.keys, self.values)
        self._reset(width, valid)
        self.positions.copy_(positions[:, -1:] + 1)
        return logits

    @torch.inference_mode()
    def load_prefix(self, cache, valid: torch.Tensor) -> None:
        """Copy a prefix already computed in a dynamic cache (keys/values [B, KV, W, D], left-padded,
        `valid` bool [B, W]) into this decoder's cache, ready to decode from column W."""
        width = valid.shape[1]
        if valid.shape[0] != self.batch_size or width >= self.max_len:
            raise ValueError(f"prefix of {tuple(valid.shape)} does not fit a decoder of {self.batch_size} x {self.max_len}")
        for src, k, v in zip(cache.layers, self.keys, self.values, strict=True):
            k[:, :, :width].copy_(src.keys)
            v[:, :, :width].copy_(src.values)
        self._reset(width, valid)
        self.positions.copy_(valid.long().sum(-1, keepdim=True))


def _compile_mode(compile: str | bool | None, device: torch.device) -> str | None:
    if compile is None:
        return "default" if device.type == "cuda" else None
    if compile is False or compile == "none":
        return None
    if compile is True:
        return "default"
    if compile not in COMPILE_MODES + NESTED_GRAPH_MODES:
        raise ValueError(f"compile must be none or one of {COMPILE_MODES}, got {compile!r}")
    return compile
