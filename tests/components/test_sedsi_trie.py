import math
import random

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LogitsProcessorList, T5Config, T5ForConditionalGeneration
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

from components.models.tiny import build_tiny_model, byte_tokenizer
from bench.bench_sedsi_reference import build_dict_trie, prefix_allowed_tokens_fn_for, reference_search
from components.sedsi.retrieve import ENGINES, TrieLogitsProcessor, constrained_search, trie_beam_search
from components.sedsi.trie import IdTrie, TrieError
from semflow.config import TinyModelConfig

EOS = 2
SEQS = [[5, 6], [5, 7, 8], [5, 6, 9], [9], [5, 6]]  # shared prefixes, one duplicate


def allowed(trie: IdTrie, prefixes: list[list[int]], vocab: int = 12) -> list[set[int]]:
    nodes = trie.walk(torch.tensor(prefixes, dtype=torch.long).reshape(len(prefixes), -1))
    mask = trie.allowed_mask(nodes, vocab)
    return [set(torch.nonzero(row).flatten().tolist()) for row in mask]


def random_eds(rng: random.Random, n: int = 50, low: int = 3, high: int = 60) -> list[list[int]]:
    heads = [[rng.randrange(low, high) for _ in range(rng.randint(1, 3))] for _ in range(8)]
    eds = {tuple(rng.choice(heads) + [rng.randrange(low, high) for _ in range(rng.randint(1, 7))]) for _ in range(n)}
    return [list(e) for e in sorted(eds)]


# ---------------------------------------------------------------------------------------------- trie
def test_build_walk_and_allowed_masks_are_exact():
    trie = IdTrie.build(SEQS, eos_id=EOS)
    assert len(trie) == 4 and trie.depth == 4 and trie.num_nodes == 11
    assert allowed(trie, [[]]) == [{5, 9}]
    assert allowed(trie, [[5], [9]]) == [{6, 7}, {EOS}]
    assert allowed(trie, [[5, 6], [5, 7], [9, EOS], [4, 5]]) == [{EOS, 9}, {8}, set(), set()]
    assert allowed(trie, [[5, 6, 9], [5, 7, 8], [5, 6, EOS]]) == [{EOS}, {EOS}, set()]
    nodes = trie.walk(torch.tensor([[5, 6, 9, EOS], [5, 8, 6, EOS], [5, 7, 8, EOS], [9, EOS, EOS, EOS]]))
    assert nodes[1] == -1 and nodes[3] == -1  # left the trie, and stays out
    assert bool((nodes[[0, 2]] > 0).all()) and trie.token[nodes[[0, 2]]].tolist() == [EOS, EOS]
    assert trie.walk(torch.tensor([[99, 1]])).tolist() == [-1]  # a token beyond every stored one
    assert trie.walk(torch.zeros(3, 0, dtype=torch.long)).tolist() == [0, 0, 0]  # empty prefix: the root
    with pytest.raises(ValueError, match="outside a vocabulary"):
        trie.allowed_mask(trie.walk(torch.zeros(1, 0, dtype=torch.long)), vocab_size=8)


def test_sequences_contains_and_eos_handling():
    trie = IdTrie.build(SEQS, eos_id=EOS)
    assert trie.sequences() == [[5, 6, EOS], [5, 6, 9, EOS], [5, 7, 8, EOS], [9, EOS]]
    assert IdTrie.build([[5, 6, EOS], [9]], EOS).sequences() == [[5, 6, EOS], [9, EOS]]  # EOS given or added
    assert trie.contains([5, 6]) and trie.contains([5, 6, EOS]) and trie.contains([9])
    assert not trie.contains([5]) and not trie.contains([5, 7]) and not trie.contains([6]) and not trie.contains([])
    assert trie.contains_batch([[5, 6, EOS], [5, 6], [9, EOS]]).tolist() == [True, False, True]


@pytest.mark.parametrize("bad, match", [
    ([[5], []], "sequence 1 is empty"),
    ([[EOS]], "sequence 0 is empty"),
    ([[5, EOS, 6]], "EOS"),
    ([[5, -1]], "negative"),
])
def test_bad_sequences_are_rejected(bad, match):
    with pytest.raises(TrieError, match=match):
        IdTrie.build(bad, eos_id=EOS)


def test_walk_and_masks_match_a_dict_trie_on_random_sequences():
    rng = random.Random(1)
    eds = random_eds(rng, n=200)
    trie, ref = IdTrie.build(eds, EOS), build_dict_trie(eds, EOS)
    assert len(trie) == len(eds)
    for length in range(0, 6):
        prefixes = [(rng.choice(eds) + [EOS] + [0] * 6)[:length] for _ in range(40)]
        prefixes += [[rng.randrange(3, 60) for _ in range(length)] for _ in range(10)]  # mostly off the trie
        masks = allowed(trie, prefixes, vocab=64)
        for prefix, got in zip(prefixes, masks, strict=True):
            node = ref
            for tok in prefix:
                node = node.get(tok) if node is not None else None
            assert got == (set(node) if node else set()), prefix


def test_extend_returns_a_new_trie_equal_to_a_fresh_build():
    base = IdTrie.build(SEQS, EOS)
    extended = base.extend([[5, 6, 1], [9], [7, 7, 7, 7]])
    assert len(base) == 4  # unchanged
    assert extended.sequences() == IdTrie.build(SEQS + [[5, 6, 1], [7, 7, 7, 7]], EOS).sequences()
    assert len(extended) == 6 and extended.depth == 5
    assert allowed(extended, [[5, 6]]) == [{1, EOS, 9}]
    assert base.extend([]).sequences() == base.sequences()
    assert IdTrie.build([], EOS).extend([[4]]).sequences() == [[4, EOS]]


def test_state_dict_round_trips_through_safetensors(tmp_path):
    trie = IdTrie.build(random_eds(random.Random(2)), EOS)
    save_file(trie.state_dict(), tmp_path / "trie.safetensors")
    loaded = IdTrie.from_state_dict(load_file(tmp_path / "trie.safetensors"))
    assert loaded.sequences() == trie.sequences() and loaded.eos_id == EOS and loaded.depth == trie.depth
    assert torch.equal(loaded.offsets, trie.offsets) and torch.equal(loaded.child_tokens, trie.child_tokens)
    assert trie.to("cpu") is trie and trie.to("cpu").device.type == "cpu"
    with pytest.raises(TrieError, match="lacks"):
        IdTrie.from_state_dict({"edge_keys": trie.edge_keys})
    state = trie.state_dict()
    state["edge_keys"] = state["edge_keys"].flip(0)
    with pytest.raises(TrieError, match="increasing"):
        IdTrie.from_state_dict(state)


# ----------------------------------------------------------------------------------------- processor
def test_processor_masks_every_row_at_once_and_ends_finished_rows():
    trie = IdTrie.build(SEQS, EOS)
    prompt = [[0, 0, 1], [0, 4, 1], [3, 4, 1], [3, 4, 1], [3, 4, 1]]  # left-padded prompts, length 3
    generated = [[5, 6], [5, 7], [9, EOS], [4, 4], [5, 6]]  # ok, ok, finished, off the trie, ok
    ids = torch.tensor([p + g for p, g in zip(prompt, generated, strict=True)])
    scores = torch.randn(5, 12)
    out = TrieLogitsProcessor(trie, prefix_len=3, pad_token_id=0)(ids, scores.clone())
    expected = [{EOS, 9}, {8}, {0, EOS}, {0, EOS}, {EOS, 9}]
    for row, keep in enumerate(expected):
        finite = set(torch.nonzero(torch.isfinite(out[row])).flatten().tolist())
        assert finite == keep
        assert torch.equal(out[row, sorted(keep)], scores[row, sorted(keep)])  # allowed scores untouched
    ref = PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn_for(build_dict_trie(SEQS, EOS), 3, EOS, 0), 1)
    assert torch.equal(ref(ids, scores.clone()), out)
    with pytest.raises(ValueError, match="beyond the model"):
        TrieLogitsProcessor(trie, prefix_len=3)(ids, torch.randn(5, 8))


# ------------------------------------------------------------------------------------ search, models
@pytest.fixture(scope="module")
def causal():
    model, tok = build_tiny_model(TinyModelConfig())
    return model, tok


@pytest.fixture(scope="module")
def seq2seq():
    tok = byte_tokenizer()
    config = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
                      decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(config).eval()
    return model, tok


QUERIES = ["where is the river", "a", "who wrote the song about the war", "zz top", "how many moons", "ok?"]
EDS = random_eds(random.Random(0))


def check_hits(trie: IdTrie, hits: list, k: int) -> None:
    seqs = [tuple(s) for s, _ in hits]
    assert 0 < len(hits) <= k
    assert all(trie.contains(s) and s[-1] == trie.eos_id for s in seqs)  # every ED is a trie member
    assert len(set(seqs)) == len(seqs)  # distinct
    scores = [score for _, score in hits]
    assert all(math.isfinite(s) and s < 0 for s in scores) and scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("which", ["causal", "seq2seq"])
@pytest.mark.parametrize("beams", [10, 20])
def test_constrained_search_returns_valid_distinct_sorted_eds(request, which, beams, engine):
    model, tok = request.getfixturevalue(which)
    trie = IdTrie.build(EDS, tok.eos_token_id)
    results = constrained_search(model, tok, QUERIES, trie, num_beams=beams, batch_size=4, engine=engine)
    assert len(results) == len(QUERIES)
    for hits in results:
        check_hits(trie, hits, beams)
    assert sum(len(h) for h in results) >= len(QUERIES) * beams // 2  # the beams do find EDs
    k3 = constrained_search(model, tok, QUERIES, trie, num_beams=beams, k=3, batch_size=4, engine=engine)
    assert all(len(h) <= 3 for h in k3)


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
@pytest.mark.parametrize("beams", [1, 10])
def test_vectorised_processor_ranks_like_prefix_allowed_tokens_fn(request, which, beams):
    model, tok = request.getfixturevalue(which)
    trie = IdTrie.build(EDS, tok.eos_token_id)
    ours = constrained_search(model, tok, QUERIES, trie, num_beams=beams, batch_size=3, engine="generate",
                              early_stopping=True)
    ref = reference_search(model, tok, QUERIES, build_dict_trie(EDS, tok.eos_token_id), tok.eos_token_id,
                           num_beams=beams, batch_size=3)
    assert [[s for s, _ in hits] for hits in ours] == ref


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_scores_are_the_beam_search_scores(causal, length_penalty):
    model, tok = causal
    trie = IdTrie.build(EDS, tok.eos_token_id)
    [hits] = constrained_search(model, tok, QUERIES[:1], trie, num_beams=10, engine="generate",
                                early_stopping=True, length_penalty=length_penalty)
    enc = tok(QUERIES[:1], return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **enc, num_beams=10, num_return_sequences=10, do_sample=False, early_stopping=True,
        length_penalty=length_penalty,
        max_new_tokens=trie.depth, eos_token_id=EOS, pad_token_id=0, output_scores=True,
        return_dict_in_generate=True,
        logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, enc["input_ids"].shape[1], 0)]),
    )
    finite = out.sequences_scores[out.sequences_scores > -1e8]
    assert [s for _, s in hits] == pytest.approx(finite.tolist(), abs=1e-5)
    # and they are the model's log-probs of the ED given the query (teacher forcing, one forward pass),
    # divided by the ED's length (EOS included) ** length_penalty
    ed, score = hits[0]
    assert _forced_logprob(model, enc["input_ids"], ed) / len(ed) ** length_penalty == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
def test_greedy_score_is_a_log_prob_too(causal, engine):
    model, tok = causal
    trie = IdTrie.build(EDS, tok.eos_token_id)
    [[(ed, score)]] = constrained_search(model, tok, QUERIES[:1], trie, num_beams=1, engine=engine)
    enc = tok(QUERIES[:1], return_tensors="pt", add_special_tokens=False)
    assert _forced_logprob(model, enc["input_ids"], ed) / len(ed) == pytest.approx(score, abs=1e-4)  # default lp 1


def _forced_logprob(model, prompt_ids: torch.Tensor, ed: list[int]) -> float:
    """log p(ED | prompt) by teacher forcing, one forward pass of a causal LM ([1, P] prompt ids)."""
    ids = torch.cat([prompt_ids, torch.tensor([ed])], dim=1)
    with torch.no_grad():
        logp = model(ids).logits[0, prompt_ids.shape[1] - 1 : -1].log_softmax(-1)
    return float(logp.gather(1, torch.tensor(ed)[:, None]).sum())


@pytest.mark.parametrize("engine", ENGINES)
def test_results_do_not_depend_on_batching(causal, engine):
    model, tok = causal
    trie = IdTrie.build(EDS, tok.eos_token_id)
    alone = [constrained_search(model, tok, [q], trie, num_beams=10, engine=engine)[0] for q in QUERIES[:3]]
    batched = constrained_search(model, tok, QUERIES[:3], trie, num_beams=10, batch_size=3, engine=engine)
    for a, b in zip(alone, batched, strict=True):
        assert [s for s, _ in a] == [s for s, _ in b]
        assert [x for _, x in a] == pytest.approx([x for _, x in b], abs=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_more_beams_than_eds_clamps_k(request, which, engine):
    model, tok = request.getfixturevalue(which)
    few = [[10, 11], [10, 12, 13], [20], [21, 22, 23, 24], [10, 11, 14]]
    trie = IdTrie.build(few, tok.eos_token_id)
    for hits in constrained_search(model, tok, QUERIES[:3], trie, num_beams=20, batch_size=2, engine=engine):
        check_hits(trie, hits, len(few))
        assert len(hits) == len(few)  # 20 beams over 5 EDs: every ED is found


def test_search_argument_errors(causal):
    model, tok = causal
    trie = IdTrie.build(EDS, tok.eos_token_id)
    with pytest.raises(ValueError, match="k must lie"):
        constrained_search(model, tok, QUERIES[:1], trie, num_beams=4, k=5)
    assert constrained_search(model, tok, [], trie, num_beams=4) == []
    with pytest.raises(ValueError, match="empty"):
        constrained_search(model, tok, QUERIES[:1], IdTrie.build([], EOS), num_beams=4)
    with pytest.raises(ValueError, match="engine"):
        constrained_search(model, tok, QUERIES[:1], trie, num_beams=4, engine="fast")
    with pytest.raises(TypeError, match="not a mix"):
        constrained_search(model, tok, [QUERIES[0], [5, 6]], trie, num_beams=4)
    with pytest.raises(TypeError, match="neither a string"):
        constrained_search(model, tok, [[5, 6], [5, None]], trie, num_beams=4)
    with pytest.raises(ValueError, match="non-empty"):
        constrained_search(model, tok, [[5, 6], []], trie, num_beams=4)
    with pytest.raises(ValueError, match="beyond the model"):
        constrained_search(model, tok, QUERIES[:1], IdTrie.build([[5, 999]], tok.eos_token_id), num_beams=4)


def test_paths_climb_from_any_node_to_the_root():
    trie = IdTrie.build(SEQS, EOS)
    prefixes = [[], [5], [5, 6], [5, 6, 9, EOS], [9, EOS], [5, 7, 8]]
    nodes = [int(trie.walk(torch.tensor([p], dtype=torch.long).reshape(1, -1))[0]) for p in prefixes]
    assert trie.paths(nodes) == prefixes
    assert trie.paths([-1, 0]) == [[], []] and trie.paths([]) == []
    leaves = torch.nonzero(trie.token == EOS).flatten()
    assert sorted(trie.paths(leaves)) == trie.sequences()


# --------------------------------------------------------------------------------- trie beam search
def teacher_forced(model, tok, query_ids: list[int], ed: list[int]) -> float:
    """Sum of the model's log-probs of `ed` after the input `query_ids` (one forward pass, no search)."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            decoder_in = torch.tensor([[model.config.decoder_start_token_id] + ed[:-1]])
            logits = model(input_ids=torch.tensor([query_ids]), decoder_input_ids=decoder_in).logits[0]
        else:
            logits = model(torch.tensor([query_ids + ed])).logits[0, len(query_ids) - 1 : -1]
    return float(logits.float().log_softmax(-1).gather(1, torch.tensor(ed)[:, None]).sum())


def query_ids(tok, which: str) -> list[list[int]]:
    return tok(QUERIES, add_special_tokens=which == "seq2seq")["input_ids"]  # T5-style inputs end with EOS


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
@pytest.mark.parametrize("eds_seed, beams, k, length_penalty", [
    (0, 1, 1, 1.0), (0, 5, 5, 0.0), (0, 10, 3, 1.0), (0, 10, 10, 0.0), (0, 10, 10, 1.0), (3, 20, 20, 1.0),
    (4, 20, 7, 0.0), (4, 20, 7, 1.0), (4, 10, 5, 2.0)])
def test_trie_engine_ranks_like_exact_generate_beam_search(request, which, eds_seed, beams, k, length_penalty):
    # identical rankings at the same length penalty: plain sums (0), generate's default (1), and stronger
    model, tok = request.getfixturevalue(which)
    eds = random_eds(random.Random(eds_seed), n=50 if eds_seed == 0 else 300)
    trie = IdTrie.build(eds, tok.eos_token_id)
    inputs = query_ids(tok, which)
    ours = constrained_search(model, tok, inputs, trie, num_beams=beams, k=k, batch_size=4,
                              length_penalty=length_penalty)
    ref = constrained_search(model, tok, inputs, trie, num_beams=beams, k=k, batch_size=4, engine="generate",
                             early_stopping="never", length_penalty=length_penalty)
    for got, want in zip(ours, ref, strict=True):
        check_hits(trie, got, k)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [x for _, x in got] == pytest.approx([x for _, x in want], abs=1e-4)


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_trie_engine_scores_are_teacher_forced_log_probs(request, which):
    model, tok = request.getfixturevalue(which)
    trie = IdTrie.build(EDS, tok.eos_token_id)
    inputs = query_ids(tok, which)[:3]
    for ids, hits in zip(inputs, constrained_search(model, tok, inputs, trie, num_beams=10, batch_size=2),
                         strict=True):
        for ed, score in hits:
            assert score == pytest.approx(teacher_forced(model, tok, ids, ed) / len(ed), abs=1e-4)  # lp 1.0


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_with_a_beam_per_ed_the_search_is_exhaustive(request, which):
    # With num_beams >= #EDs no level of the trie holds more prefixes than beams: nothing is pruned, so the
    # result is every ED ranked by its true log-prob, and the top k of it for smaller k.
    model, tok = request.getfixturevalue(which)
    eds = random_eds(random.Random(7), n=30)
    trie = IdTrie.build(eds, tok.eos_token_id)
    inputs = query_ids(tok, which)[:3]
    full = constrained_search(model, tok, inputs, trie, num_beams=len(trie), batch_size=2)
    top5 = constrained_search(model, tok, inputs, trie, num_beams=len(trie), k=5, batch_size=2)
    for ids, hits, short in zip(inputs, full, top5, strict=True):
        truth = sorted(((teacher_forced(model, tok, ids, ed) / len(ed), ed) for ed in trie.sequences()), reverse=True)
        assert [ed for _, ed in truth] == [ed for ed, _ in hits]
        assert [s for s, _ in truth] == pytest.approx([s for _, s in hits], abs=1e-4)
        assert [ed for ed, _ in short] == [ed for ed, _ in hits[:5]]
        assert [s for _, s in short] == pytest.approx([s for _, s in hits[:5]], abs=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_token_id_inputs_give_the_same_results_as_texts(request, which, engine):
    model, tok = request.getfixturevalue(which)
    trie = IdTrie.build(EDS, tok.eos_token_id)
    special = which == "seq2seq"
    texts = constrained_search(model, tok, QUERIES, trie, num_beams=5, batch_size=4, engine=engine,
                               add_special_tokens=special)
    ids = constrained_search(model, tok, tok(QUERIES, add_special_tokens=special)["input_ids"], trie, num_beams=5,
                             batch_size=4, engine=engine)
    tensors = constrained_search(model, tok, [torch.tensor(q) for q in tok(QUERIES, add_special_tokens=special)[
        "input_ids"]], trie, num_beams=5, batch_size=4, engine=engine)
    assert texts == ids == tensors


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_both_engines_agree_on_the_top_hit_with_default_settings(request, which):
    model, tok = request.getfixturevalue(which)
    trie = IdTrie.build(random_eds(random.Random(11), n=200), tok.eos_token_id)
    queries = QUERIES + ["what is the capital of france", "river song", "moons of jupiter"]
    for beams in (1, 10):
        fast = constrained_search(model, tok, queries, trie, num_beams=beams, batch_size=4)
        slow = constrained_search(model, tok, queries, trie, num_beams=beams, batch_size=4, engine="generate")
        assert [h[0][0] for h in fast] == [h[0][0] for h in slow]
        assert [h[0][1] for h in fast] == pytest.approx([h[0][1] for h in slow], abs=1e-4)


def test_trie_beam_search_on_its_own(causal):
    model, tok = causal
    trie = IdTrie.build([[10, 11], [10, 12, 13], [20]], tok.eos_token_id)
    [hits] = trie_beam_search(model, [tok("hello")["input_ids"]], trie, num_beams=2, pad_id=tok.pad_token_id)
    assert len(hits) == 2 and all(trie.contains(ed) for ed, _ in hits)
    [short] = trie_beam_search(model, [tok("hello")["input_ids"]], trie, num_beams=3, max_new_tokens=2)
    assert [ed for ed, _ in short] == [[20, tok.eos_token_id]]  # the only ED of at most 2 tokens
    assert trie_beam_search(model, [], trie, num_beams=2) == []
    with pytest.raises(ValueError, match="at least one token"):
        trie_beam_search(model, [[]], trie, num_beams=2)
    with pytest.raises(ValueError, match="k must lie"):
        trie_beam_search(model, [[5]], trie, num_beams=2, k=3)
