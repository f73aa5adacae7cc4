"""SCRG: the corrected index on hand-built distributions, prefix-cache regeneration equal to generating
from scratch, and sequences kept when teacher and student agree."""

import math

import pytest
import torch

from components.distill.scrg import sample_responses, correct_and_regenerate, select_correction, token_divergence
from components.distill.spans import PhraseChunker, pair_starts
from components.models.tiny import build_tiny_model
from semflow.config import ScrgConfig, TinyModelConfig


def test_select_correction_picks_the_largest_divergence_among_disagreements():
    # Row 0: position 1 has the largest divergence but the tokens agree there; position 3 is the
    # largest disagreeing one. Row 1: no disagreement -> kept (-1). Row 2: the only disagreement is
    # before the settled position (a previous round), so none qualifies.
    divergence = torch.tensor([[0.1, 9.0, 0.5, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 0.0, 0.0, 0.0, 0.0]])
    sequence = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    teacher = torch.tensor([[9, 2, 8, 7, 6], [1, 2, 3, 4, 5], [9, 2, 3, 4, 5]])
    candidates = torch.ones(3, 5, dtype=torch.bool)
    candidates[2, 0] = False
    j, d = select_correction(divergence, sequence, teacher, candidates)
    assert j.tolist() == [3, -1, -1]
    assert d[0] == 2.0 and math.isnan(d[1]) and math.isnan(d[2])


def test_token_divergence_directions():
    p = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    q = torch.log(torch.tensor([[0.1, 0.2, 0.7]]))
    forward = (0.7 * math.log(7) + 0.1 * math.log(1 / 7))
    assert token_divergence(p, q, "forward").item() == pytest.approx(forward, rel=1e-5)
    assert token_divergence(q, p, "reverse").item() == pytest.approx(forward, rel=1e-5)
    with pytest.raises(ValueError, match="direction"):
        token_divergence(p, q, "sideways")


@pytest.fixture(scope="module")
def models():
    teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
    student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    return teacher, student, tok


def _prompts(tok):
    texts = ["hello world", "a much longer prompt than the others", "x", "two words"]
    seqs = ["some response text", "ok", "another answer that is long", "yes"]
    return [tok(t)["input_ids"] for t in texts], [tok(s)["input_ids"] for s in seqs]


def test_regeneration_from_the_prefix_cache_equals_generating_from_scratch(models):
    teacher, student, tok = models
    prompts, seqs = _prompts(tok)
    cfg = ScrgConfig(do_sample=False, max_new_tokens=40, teacher_token="argmax", batch_size=3)
    result = correct_and_regenerate(teacher, student, tok, prompts, seqs, cfg, progress=False)
    assert all(len(p) == 1 for p in result.positions)  # random models disagree somewhere
    for prompt, original, revised, (j,), regen in zip(
        prompts, seqs, result.revised, result.positions, result.regenerated, strict=True
    ):
        assert revised[:j] == original[:j]
        prefix = torch.tensor([prompt + revised[: j + 1]])
        ref = student.generate(prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=40 - (j + 1),
                               do_sample=False, pad_token_id=0, eos_token_id=[2])[0, prefix.shape[1]:].tolist()
        if 2 in ref:
            ref = ref[: ref.index(2) + 1]
        assert revised[j + 1 :] == ref
        assert regen == len(ref) and len(revised) <= 40


def test_teacher_token_is_the_teachers_argmax_at_j(models):
    teacher, student, tok = models
    prompts, seqs = _prompts(tok)
    cfg = ScrgConfig(do_sample=False, max_new_tokens=40, teacher_token="argmax")
    result = correct_and_regenerate(teacher, student, tok, prompts, seqs, cfg, progress=False)
    for prompt, original, revised, (j,) in zip(prompts, seqs, result.revised, result.positions, strict=True):
        with torch.no_grad():
            logits = teacher(torch.tensor([prompt + original[:j]])).logits[0, -1]
        assert revised[j] == int(logits.argmax()) != original[j]


def test_agreeing_models_keep_the_sequence(models):
    _, student, tok = models
    prompts, _ = _prompts(tok)
    cfg = ScrgConfig(do_sample=False, max_new_tokens=12, teacher_token="argmax")
    greedy = sample_responses(student, tok, prompts, cfg)
    result = correct_and_regenerate(student, student, tok, prompts, greedy, cfg, progress=False)
    assert result.revised == greedy and all(p == [] for p in result.positions)


def test_several_rounds_move_forward(models):
    teacher, student, tok = models
    prompts, seqs = _prompts(tok)
    cfg = ScrgConfig(rounds=3, max_new_tokens=30, seed=3)
    result = correct_and_regenerate(teacher, student, tok, prompts, seqs, cfg, progress=False)
    for positions in result.positions:
        assert positions == sorted(set(positions)) and len(positions) >= 2
    again = correct_and_regenerate(teacher, student, tok, prompts, seqs, cfg, progress=False)
    assert again.revised == result.revised  # seeded sampling reproduces


def test_sampled_responses_end_at_eos_or_budget(models):
    _, student, tok = models
    prompts, _ = _prompts(tok)
    out = sample_responses(student, tok, prompts, ScrgConfig(max_new_tokens=16, seed=1))
    for ids in out:
        assert len(ids) <= 16 and (2 not in ids[:-1])
    assert out == sample_responses(student, tok, prompts, ScrgConfig(max_new_tokens=16, seed=1))


@pytest.mark.parametrize("kind", ["rules", "spacy"])
def test_span_pairs_stay_inside_phrases(kind, models):
    _, _, tok = models
    ids = tok("the lazy dog, of course")["input_ids"] + [2]
    pairs = pair_starts(tok, ids, PhraseChunker(kind))
    text = tok.decode(ids, skip_special_tokens=True)
    # byte tokens: "the lazy dog" is one phrase (11 inner pairs); the comma and EOS start no pair
    assert pairs[:11] == [True] * 11 and pairs[11] is False and pairs[12] is False and pairs[-1] is False
    assert len(pairs) == len(ids) and text.startswith("the lazy dog")
