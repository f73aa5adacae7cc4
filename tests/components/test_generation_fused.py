"""The fused decoding path computes what `generate` computes, and its top-k sampler draws from the
distribution transformers' warpers define.

The model is a tiny random Llama with grouped-query attention (4 query heads over 2 kv heads, 3 layers),
so the packed GQA grouping is exercised; prompts of different lengths are left-padded. On CPU the step
runs eagerly or through Inductor's C++ backend; the CUDA test (graph capture of the compiled step)
runs only where a GPU is present (bench/gpu_check.sh)."""

from dataclasses import replace

import pytest
import torch
from scipy.stats import chisquare
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from components.generation.batched import decode_batches
from components.generation.fused import (
    FusedDecoder,
    choose_topk,
    forward_last,
    fuse_weights,
    noise_width,
    rotary_tables,
    supports_fused,
)
from components.generation.padding import pad_rows
from components.generation.static import Sampling, static_length
from components.models.tiny import build_tiny_model
from components.rng import seeded
from semflow.config import TinyModelConfig

QUESTIONS = ["a", "bb bb", "ccc ccc ccc ccc ccc", "dddd" * 10, "e", "ff", "ggg g"]
GQA = dict(num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3, hidden_size=32)


@pytest.fixture(scope="module")
def tiny():
    model, tok = build_tiny_model(TinyModelConfig(seed=3, **GQA))
    return model.eval(), tok


@pytest.fixture(scope="module")
def prompts(tiny):
    _, tok = tiny
    return [tok(q)["input_ids"] for q in QUESTIONS]


def _plain(model, tok, prompts, new, batch_size=4):
    return decode_batches(model, prompts, max_new_tokens=new, sampling=Sampling(), eos=_eos(model),
                          pad_id=tok.pad_token_id, batch_size=batch_size, seed=0, engine="plain")


def _eos(model):
    ids = model.generation_config.eos_token_id
    return sorted(ids if isinstance(ids, list) else [ids])


def _fused(model, tok, prompts, new, batch_size=4, **kwargs):
    """Prompts in decoder batches of `batch_size` (the last one short), in order."""
    decoder = FusedDecoder(model, batch_size, static_length(max(map(len, prompts)), new), Sampling(),
                           _eos(model), tok.pad_token_id, **kwargs)
    out = []
    for i in range(0, len(prompts), batch_size):
        out += decoder.generate(prompts[i : i + batch_size], new)
    return out


def test_fused_weights_and_forward_equal_the_unfused_model():
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, attention_bias=True, mlp_bias=True, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random biases and norm weights, so a wrong concatenation order shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0, 0.5)
    arch, layers, head = fuse_weights(model)
    x = torch.randn(3, 5, 32)
    attn, mlp = model.model.layers[1].self_attn, model.model.layers[1].mlp
    q, k, v = torch.nn.functional.linear(x, layers[1].qkv, layers[1].qkv_bias).split([32, 16, 16], -1)
    assert torch.allclose(q, attn.q_proj(x), atol=1e-6) and torch.allclose(k, attn.k_proj(x), atol=1e-6)
    assert torch.allclose(v, attn.v_proj(x), atol=1e-6)
    gate, up = torch.nn.functional.linear(x, layers[1].gate_up, layers[1].gate_up_bias).chunk(2, -1)
    assert torch.allclose(gate, mlp.gate_proj(x), atol=1e-6) and torch.allclose(up, mlp.up_proj(x), atol=1e-6)
    assert layers[1].o.data_ptr() == attn.o_proj.weight.data_ptr()  # shared, not copied

    # The whole prefill: logits of the last position of left-padded rows equal the model's.
    ids, mask = pad_rows([[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]], 0)
    width, cols = ids.shape[1], 16
    valid = mask.bool()
    allowed = torch.ones(width, cols, dtype=torch.bool).tril()[None] & torch.nn.functional.pad(valid, (0, cols - width))[:, None]
    additive = torch.zeros(3, 1, width, cols).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cos, sin = rotary_tables(model, cols)
    for attention in ("grouped", "sdpa"):
        arch, layers, head = fuse_weights(model, attention)
        keys = [torch.zeros(3, 2, cols, 8) for _ in layers]
        values = [torch.zeros(3, 2, cols, 8) for _ in layers]
        with torch.inference_mode():
            ours = forward_last(arch, layers, head, ids, cos[positions], sin[positions], torch.arange(width), additive,
                                keys, values)
            theirs = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        assert torch.allclose(ours, theirs, atol=1e-5), (attention, (ours - theirs).abs().max())


@pytest.mark.parametrize("attention", ["grouped", "sdpa"])
def test_greedy_fused_equals_generate_token_for_token(tiny, prompts, attention):
    model, tok = tiny
    plain = _plain(model, tok, prompts, 24)
    # A second EOS id the greedy output hits mid-sequence, so rows end at different steps.
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [saved, plain[0][5]]
    try:
        plain = _plain(model, tok, prompts, 24)
        fused = _fused(model, tok, prompts, 24, attention=attention)  # 7 prompts: batches of 4 and 3
    finally:
        model.generation_config.eos_token_id = saved
    assert fused == plain
    assert any(len(t) < 24 for t in plain) and any(len(t) == 24 for t in plain)  # both endings exercised
    assert len({tuple(t) for t in plain}) > 1


def test_decoding_after_a_loaded_prefix_equals_generate(tiny, prompts):
    """SCRG's path: a prefix computed in a dynamic cache, then decoding from its last token."""
    model, tok = tiny
    ids, mask = pad_rows(prompts[:4], tok.pad_token_id)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        positions = (mask[:, :-1].cumsum(-1) - 1).clamp_min(0)  # as generate counts them
        model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions, cache=cache, use_cache=True)
        reference = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                                   pad_token_id=tok.pad_token_id, eos_token_id=_eos(model))[:, ids.shape[1]:]
    decoder = FusedDecoder(model, 4, static_length(ids.shape[1], 20), Sampling(), _eos(model), tok.pad_token_id)
    decoder.load_prefix(cache, mask[:, :-1].bool())
    tails = decoder.decode(ids[:, -1], 20)
    n = reference.shape[1]
    assert torch.equal(tails[:, :n], reference)


@pytest.mark.parametrize("top_k,top_p,temperature", [(10, 1.0, 0.7), (10, 0.8, 1.3), (0, 0.8, 1.0), (200, 0.9, 1.0)])
def test_topk_sampler_matches_transformers_warpers_in_distribution(top_k, top_p, temperature):
    """Chi-square of 20,000 draws against the warpers' distribution; the same test rejects a sampler
    that gets the temperature wrong (the negative control shows it has the power to fail)."""
    vocab, draws = 120, 20_000
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(1)) * 2
    target = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        target = TopKLogitsWarper(top_k)(None, target)
    if top_p < 1:
        target = TopPLogitsWarper(top_p)(None, target)
    target = target.softmax(-1)[0].double()
    support = target > 0

    def fit(sampling) -> tuple[int, float]:
        """(draws outside the warpers' support, chi-square p-value of the draws inside it)"""
        noise = torch.empty(draws, noise_width(sampling, vocab)).exponential_(generator=torch.Generator().manual_seed(7))
        tokens = choose_topk(logits.expand(draws, -1).clone(), sampling, noise)
        counts = torch.bincount(tokens, minlength=vocab).double()
        inside = counts[support]
        expected = target[support] / target[support].sum() * inside.sum()
        return int(counts[~support].sum()), chisquare(inside.numpy(), expected.numpy()).pvalue

    sampling = Sampling(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    outside, p = fit(sampling)
    assert outside == 0 and p > 1e-3
    outside, p = fit(replace(sampling, temperature=temperature * 1.4))
    assert outside > 0 or p < 1e-6


def test_draws_change_between_steps_and_a_fixed_seed_reproduces(tiny, prompts):
    model, tok = tiny
    sampling = Sampling(do_sample=True, top_k=20, temperature=1.0)
    decoder = FusedDecoder(model, 4, static_length(40, 16), sampling, _eos(model), tok.pad_token_id)
    with seeded(5):
        a = decoder.generate(prompts[:4], 16)
    with seeded(5):
        b = decoder.generate(prompts[:4], 16)
    with seeded(6):
        c = decoder.generate(prompts[:4], 16)
    assert a == b and a != c
    # the noise of consecutive steps differs (it is what the race draws with)
    ids, mask = pad_rows(prompts[:4], tok.pad_token_id)
    decoder.prefill(ids, mask.bool())
    noises = []
    for _ in range(3):
        decoder._step()
        noises.append(decoder.noise.clone())
    assert not torch.equal(noises[0], noises[1]) and not torch.equal(noises[1], noises[2])
    greedy = _fused(model, tok, prompts[:4], 16)
    assert a != greedy  # sampled, not argmax


def test_refresh_weights_follows_a_trained_model(prompts):
    model, tok = build_tiny_model(TinyModelConfig(seed=4, **GQA))
    decoder = FusedDecoder(model, 4, static_length(40, 12), Sampling(), _eos(model), tok.pad_token_id)
    before = decoder.generate(prompts[:4], 12)
    with torch.no_grad():
        for layer in model.model.layers:  # an "optimizer step" on the weights the decoder copied
            layer.self_attn.k_proj.weight.mul_(-1.5)
            layer.mlp.up_proj.weight.mul_(-1.0)
    expected = _plain(model, tok, prompts[:4], 12)
    assert before != expected  # the update changes the output, so the check below can fail
    decoder.refresh_weights()
    assert decoder.generate(prompts[:4], 12) == expected


def test_unsupported_models_and_modes(tiny):
    model, tok = tiny
    assert supports_fused(model) is None
    with pytest.raises(ValueError, match="nested"):
        FusedDecoder(model, 2, 64, Sampling(), [2], 0, use_graph=True, compile="reduce-overhead")
    with pytest.raises(ValueError, match="compile must be"):
        FusedDecoder(model, 2, 64, Sampling(), [2], 0, compile="fast")
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    assert "Llama only" in supports_fused(gpt2) or "static cache" in supports_fused(gpt2)


@pytest.mark.slow  # ~90 s on 2 busy cores: Inductor's C++ build of two step variants
def test_compiled_step_equals_eager_and_generate(tiny, prompts, tmp_path, monkeypatch):
    """Inductor (C++ on CPU) compiles the decode step; greedy tokens equal generate's and sampled
    tokens equal the eager step's for the same seed (the noise is drawn outside the compiled code)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # a cold build, not ~/.cache
    model, tok = tiny
    plain = _plain(model, tok, prompts, 16)
    compiled = _fused(model, tok, prompts, 16, compile="default")
    assert compiled == plain
    sampling = Sampling(do_sample=True, top_k=30, top_p=0.9, temperature=0.8)
    width = static_length(max(map(len, prompts[:4])), 16)
    eager = FusedDecoder(model, 4, width, sampling, _eos(model), tok.pad_token_id)
    fast = FusedDecoder(model, 4, width, sampling, _eos(model), tok.pad_token_id, compile="default")
    with seeded(3):
        a = eager.generate(prompts[:4], 16)
    with seeded(3):
        b = fast.generate(prompts[:4], 16)
    assert a == b and fast.first_step_seconds is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the captured CUDA graph needs a GPU")
@pytest.mark.parametrize("compile", ["none", "default"])
def test_cuda_graph_of_the_fused_step(compile):
    model, tok = build_tiny_model(TinyModelConfig(seed=3, **GQA))
    model = model.to("cuda").eval()
    prompts = [tok(q)["input_ids"] for q in QUESTIONS]
    assert _fused(model, tok, prompts, 40, compile=compile) == _plain(model, tok, prompts, 40)
    sampling = Sampling(do_sample=True, top_k=50, top_p=0.95)
    decoder = FusedDecoder(model, 4, static_length(40, 40), sampling, _eos(model), tok.pad_token_id, compile=compile)
    with seeded(1):
        a = decoder.generate(prompts[:4], 40)
    assert decoder.graph is not None
    noises = []
    for _ in range(2):  # replays of the captured graph draw new noise
        decoder.graph.replay()
        noises.append(decoder.noise.clone())
    assert not torch.equal(noises[0], noises[1])
    with seeded(1):
        b = decoder.generate(prompts[:4], 40)
    with seeded(2):
        c = decoder.generate(prompts[:4], 40)
    assert a == b and a != c
