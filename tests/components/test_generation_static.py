"""The static-cache decoding path computes what `generate` computes.

On CPU the decode step runs eagerly (the CUDA graph is the same step, captured); the test marked for
CUDA replays the graph and runs only where a GPU is present (bench/gpu_check.sh runs it there)."""

import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from components.distill.scrg import sample_responses, correct_and_regenerate
from components.generation import format_prompts, generate
from components.generation.batched import decode_batches, resolve_engine
from components.generation.static import Sampling, StaticDecoder, filtered_scores, static_length
from components.models.tiny import build_tiny_model
from semflow.config import GenerationConfig, ScrgConfig, TinyModelConfig

QUESTIONS = ["a", "bb bb", "ccc ccc ccc ccc ccc", "dddd" * 10, "e", "ff", "ggg g"]


@pytest.fixture(scope="module")
def tiny():
    model, tok = build_tiny_model(TinyModelConfig(seed=3))
    return model.eval(), tok


def _rendered(tok):
    return format_prompts(tok, QUESTIONS, [""] * len(QUESTIONS))


def test_greedy_static_equals_generate_token_for_token(tiny):
    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=24, batch_size=3, engine="plain")  # 7 prompts: a short last batch
    plain = generate(model, tok, _rendered(tok), cfg, progress=False)
    # A second EOS id the greedy output hits mid-sequence, so rows end at different steps.
    stop_token = plain.token_ids[0][5]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [saved, stop_token]
    try:
        plain = generate(model, tok, _rendered(tok), cfg, progress=False)
        static = generate(model, tok, _rendered(tok), cfg.model_copy(update={"engine": "static"}), progress=False)
        fused = generate(model, tok, _rendered(tok), cfg.model_copy(update={"engine": "fused"}), progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    assert static.token_ids == plain.token_ids and fused.token_ids == plain.token_ids
    assert static.finished == plain.finished and fused.finished == plain.finished
    assert any(plain.finished) and not all(plain.finished)  # both endings exercised
    assert len({tuple(t) for t in plain.token_ids}) > 1


def test_static_decoder_is_reused_across_batches_of_one_shape(tiny):
    model, tok = tiny
    prompts = [tok(q)["input_ids"] for q in QUESTIONS]
    eos = [tok.eos_token_id]
    decoder = StaticDecoder(model, 4, static_length(40, 12), Sampling(), eos, tok.pad_token_id)
    first = decoder.generate(prompts[:4], 12)
    second = decoder.generate(prompts[4:], 12)  # 3 rows: padded to the decoder's 4
    again = decoder.generate(prompts[:4], 12)
    assert first == again  # nothing of the previous batch leaks into the next
    fresh = StaticDecoder(model, 4, static_length(40, 12), Sampling(), eos, tok.pad_token_id)
    assert fresh.generate(prompts[4:], 12) == second
    reference = decode_batches(model, prompts, max_new_tokens=12, sampling=Sampling(), eos=eos,
                               pad_id=tok.pad_token_id, batch_size=4, seed=0, engine="plain")
    # decode_batches sorts by length before batching; compare as a set of (prompt, continuation).
    assert {tuple(p): c for p, c in zip(prompts, reference, strict=True)} == {
        **{tuple(p): c for p, c in zip(prompts[:4], first, strict=True)},
        **{tuple(p): c for p, c in zip(prompts[4:], second, strict=True)},
    }


def test_sampling_is_reproducible_and_depends_on_the_seed(tiny):
    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=16, batch_size=4, do_sample=True, top_k=50, top_p=0.9, seed=11,
                           engine="static")
    a = generate(model, tok, _rendered(tok), cfg, progress=False)
    b = generate(model, tok, _rendered(tok), cfg, progress=False)
    c = generate(model, tok, _rendered(tok), cfg.model_copy(update={"seed": 12}), progress=False)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


@pytest.mark.parametrize("top_k,top_p,temperature", [(0, 1.0, 1.0), (5, 1.0, 0.7), (0, 0.8, 1.3), (20, 0.5, 1.0)])
def test_filtering_matches_transformers_warpers(top_k, top_p, temperature):
    torch.manual_seed(0)
    logits = torch.randn(6, 300) * 3
    ours = filtered_scores(logits, Sampling(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p))
    theirs = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        theirs = TopKLogitsWarper(top_k)(None, theirs)
    if top_p < 1:
        theirs = TopPLogitsWarper(top_p)(None, theirs)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])


def test_exponential_race_draws_follow_the_distribution():
    from components.generation.static import choose_tokens

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    torch.manual_seed(0)
    draws = choose_tokens(probs.log().expand(40_000, -1).clone(), Sampling(do_sample=True))
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert torch.allclose(freq, probs, atol=0.01)


def test_scrg_regenerates_the_same_suffix_on_every_engine():
    teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
    student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    prompts = [tok(t)["input_ids"] for t in ["hello world", "a much longer prompt than the others", "x", "ab"]]
    cfg = ScrgConfig(max_new_tokens=20, do_sample=False, teacher_token="argmax", rounds=2, batch_size=3,
                     engine="plain")
    samples = sample_responses(student, tok, prompts, cfg)
    assert sample_responses(student, tok, prompts, cfg.model_copy(update={"engine": "static"})) == samples
    plain = correct_and_regenerate(teacher, student, tok, prompts, samples, cfg, progress=False)
    static = correct_and_regenerate(teacher, student, tok, prompts, samples, cfg.model_copy(update={"engine": "static"}),
                          progress=False)
    assert static.revised == plain.revised
    assert static.positions == plain.positions and sum(plain.regenerated) > 0
    fused = correct_and_regenerate(teacher, student, tok, prompts, samples, cfg.model_copy(update={"engine": "fused"}),
                                   progress=False)
    assert fused.revised == plain.revised


def test_engine_choice_and_unsupported_models(tiny):
    model, _ = tiny
    assert resolve_engine(model, "auto") == "plain"  # CPU
    assert resolve_engine(model, "static") == "static" and resolve_engine(model, "fused") == "fused"
    saved = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 1.3
    try:
        with pytest.raises(ValueError, match="repetition_penalty"):
            resolve_engine(model, "static")
    finally:
        model.generation_config.repetition_penalty = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the captured CUDA graph needs a GPU")
def test_cuda_graph_path_equals_generate():
    model, tok = build_tiny_model(TinyModelConfig(seed=3))
    model = model.to("cuda").eval()
    prompts = [tok(q)["input_ids"] for q in QUESTIONS]
    eos = [tok.eos_token_id]
    kwargs = dict(max_new_tokens=40, sampling=Sampling(), eos=eos, pad_id=tok.pad_token_id, batch_size=4, seed=0)
    plain = decode_batches(model, prompts, engine="plain", **kwargs)
    graph = decode_batches(model, prompts, engine="static", **kwargs)
    assert graph == plain
    sampled = dict(kwargs, sampling=Sampling(do_sample=True, top_k=50, top_p=0.95))
    assert decode_batches(model, prompts, engine="static", **sampled) == decode_batches(
        model, prompts, engine="static", **sampled)
