"""SE-DSI: ED generation, training pairs and their encoding, the label-smoothed loss, an index that learns
a small collection, saving/loading, collisions and incremental extension."""

import pytest
import torch
import torch.nn.functional as F

from components.distill.losses import IGNORE
from components.models.tiny import build_tiny_model
from components.sedsi import (
    Descriptions,
    EdSettings,
    IndexPair,
    RehearsalSettings,
    SedsiIndex,
    build_pairs,
    generate_descriptions,
    index_loss_fn,
    train_index,
)
from components.sedsi.index import as_qrels, heldout_table
from components.sedsi.training import IdEncoder, pair_counts, replay_sample
from semflow.config import TinyModelConfig, TrainerConfig

DOCS = {
    "d1": "Cats purr when they are content. A cat sleeps most of the day.",
    "d2": "Rivers carry water to the sea. The Nile is a long river.",
    "d3": "Volcanoes erupt lava and ash. Etna is an active volcano.",
    "d4": "Bees make honey from nectar. A hive holds thousands of bees.",
}


@pytest.fixture(scope="module")
def tiny():
    model, tok = build_tiny_model(TinyModelConfig(seed=5))
    return model.eval(), tok


def _descriptions(eds: dict[str, str], train=None, heldout=None) -> Descriptions:
    ids = list(eds)
    return Descriptions(
        doc_ids=ids, eds=[eds[d] for d in ids], candidates=[[eds[d]] for d in ids], scores=[[0.0] for _ in ids],
        train_queries=[(train or {}).get(d, []) for d in ids], heldout=[(heldout or {}).get(d, []) for d in ids],
    )


def test_descriptions_rank_candidates_and_hold_out_pseudo_queries(tiny):
    model, tok = tiny
    settings = EdSettings(candidates=6, heldout=2, max_tokens=8, batch_size=8, seed=3)
    eds = generate_descriptions(model, tok, list(DOCS), list(DOCS.values()), settings, progress=False)
    again = generate_descriptions(model, tok, list(DOCS), list(DOCS.values()), settings, progress=False)
    assert eds.eds == again.eds and eds.heldout == again.heldout  # seeded
    for d, ed in enumerate(eds.eds):
        cands = eds.candidates[d]
        assert cands[0] == ed and len(set(cands)) == len(cands)  # the ED is the top-1 candidate
        held, train = set(eds.heldout[d]), set(eds.train_queries[d])
        assert ed not in held and ed not in train and not held & train
        assert held | train == set(cands[1:])  # nothing dropped
        assert len(held) == min(2, len(cands) - 1)
    assert 0.0 <= eds.collision_rate <= 1.0
    assert Descriptions.from_rows(eds.rows()).eds == eds.eds


def test_descriptions_refuse_documents_without_text(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match=r"1 documents have no text \(first: \['d2'\]\)"):
        generate_descriptions(model, tok, ["d1", "d2"], ["some text", "   "], EdSettings(candidates=1), progress=False)
    with pytest.raises(ValueError, match="2 doc ids but 1 texts"):
        generate_descriptions(model, tok, ["d1", "d2"], ["x"], EdSettings(candidates=1), progress=False)


def test_candidate_log_probs_gathered_at_candidate_positions_equal_a_full_log_softmax(tiny):
    from components.sedsi.descriptions import continuation_logprobs

    model, tok = tiny
    prompts = [tok("Document: cats purr", add_special_tokens=False)["input_ids"], tok("Q", add_special_tokens=False)["input_ids"]]
    conts = [tok(" soft", add_special_tokens=False)["input_ids"], tok(" river delta", add_special_tokens=False)["input_ids"]]
    got = continuation_logprobs(model, prompts, conts, pad_id=tok.pad_token_id, batch_size=2)
    for p, c, lp in zip(prompts, conts, got, strict=True):
        with torch.no_grad():
            full = model(torch.tensor([p + c])).logits[0].float().log_softmax(-1)
        want = [float(full[len(p) - 1 + j, t]) for j, t in enumerate(c)]
        assert lp == pytest.approx(want, abs=1e-4)


def test_the_shared_prompt_sampler_records_the_models_log_probs_and_is_seeded(tiny):
    from components.sedsi.descriptions import continuation_logprobs, sample_shared_prompt, shared_prompt_logprobs

    model, tok = tiny
    prompts = [tok("Document: cats purr. Query:", add_special_tokens=False)["input_ids"],
               tok("Rivers", add_special_tokens=False)["input_ids"]]
    kw = dict(max_new_tokens=6, temperature=1.0, top_k=20, eos=[tok.eos_token_id], pad_id=tok.pad_token_id)
    tokens, logps = sample_shared_prompt(model, prompts, 3, batch_size=2, seed=4, **kw)
    assert len(tokens) == 6 and all(1 <= len(t) <= 6 for t in tokens)
    assert all(tok.eos_token_id not in t[:-1] for t in tokens)  # a row stops at its EOS
    assert sample_shared_prompt(model, prompts, 3, batch_size=2, seed=4, **kw)[0] == tokens  # seeded
    assert sample_shared_prompt(model, prompts, 3, batch_size=2, seed=5, **kw)[0] != tokens
    repeated = [p for p in prompts for _ in range(3)]
    forward = continuation_logprobs(model, repeated, tokens, pad_id=tok.pad_token_id)
    for lp, want in zip(logps, forward, strict=True):  # the log-probs read while sampling are the model's
        assert lp == pytest.approx(want, abs=1e-4)
    shared = shared_prompt_logprobs(model, prompts[1], tokens, pad_id=tok.pad_token_id, batch_size=4)
    plain = continuation_logprobs(model, [prompts[1]] * 6, tokens, tok.pad_token_id)
    for got, want in zip(shared, plain, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_generic_candidates_and_the_specificity_scorer():
    from components.sedsi.descriptions import Candidates, choose, content_words, is_generic

    doc = "The Nile is the longest river in Africa and flows into the Mediterranean Sea."
    assert content_words("What is the Nile?") == {"nile"}
    assert is_generic("What can I do for you?", doc)  # no content word of the document
    assert is_generic("I'm here to help with the river question", doc)  # boilerplate despite "river"
    assert not is_generic("how long is the nile river", doc)
    # three samples: boilerplate (likeliest under the generator), a specific query, a generic one
    texts = ["I'm here to assist you. How can I help?", "how long is the nile river", "what is this"]
    with_doc = [[-0.1, -0.1], [-1.0, -1.0, -1.0], [-0.5]]
    without = [[-0.1, -0.2], [-3.0, -3.0, -3.0], [-0.4]]  # the specific query is much likelier given the doc
    cands = Candidates(["d"], [doc], 3, texts, [True] * 3, with_doc, without)
    assert cands.scores("mean_logprob") == pytest.approx([-0.1, -1.0, -0.5])
    assert cands.scores("specificity") == pytest.approx([0.1, 6.0, -0.1])
    paper = choose(cands, EdSettings(scorer="mean_logprob", filter_generic=False, heldout=0))
    assert paper.eds == [texts[0]] and paper.generic == ["d"] and paper.generic_share == 1.0
    filtered = choose(cands, EdSettings(scorer="mean_logprob", filter_generic=True, heldout=0))
    assert filtered.eds == [texts[1]] and filtered.candidates[0][1:] == [texts[0], texts[2]] and filtered.generic == []
    assert choose(cands, EdSettings(scorer="specificity", filter_generic=False, heldout=0)).eds == [texts[1]]
    # only generic candidates: one of them is still the ED, and it is counted
    only = Candidates(["d"], [doc], 2, [texts[0], texts[2]], [True, True], with_doc[::2], without[::2])
    assert choose(only, EdSettings(heldout=0)).generic == ["d"]
    with pytest.raises(ValueError, match="document-free"):
        Candidates(["d"], [doc], 1, texts[:1], [True], with_doc[:1], None).scores("specificity")


def test_candidates_are_ranked_by_the_generators_mean_log_probability(tiny):
    from components.sedsi.descriptions import sequence_scores

    model, tok = tiny
    prompt = tok("Document: cats", add_special_tokens=False)["input_ids"]
    greedy = model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False)[0, len(prompt):].tolist()
    other = [t + 1 if t + 1 < len(tok) else 3 for t in greedy]
    scores = sequence_scores(model, [prompt, prompt], [greedy, other], pad_id=tok.pad_token_id)
    assert scores[0] > scores[1]  # the model's own greedy continuation is the likelier one


def test_pairs_cover_document_rehearsal_and_queries():
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    text = " ".join(f"Sentence {w} talks about its topic." for w in words)
    desc = _descriptions({"a": "topic query"}, train={"a": ["q one", "q two"]})
    # the paper's mix: document, rehearsal contents and the labelled training query; no pseudo-queries
    pairs = build_pairs(["a"], [text], desc, RehearsalSettings(style="leading"), queries={"a": ["labelled q"]})
    assert pair_counts(pairs) == {"document": 1, "passage": 3, "sentence": 6, "query": 1}
    assert [p.text for p in pairs if p.kind == "query"] == ["labelled q"]
    zero_shot = build_pairs(["a"], [text], desc, RehearsalSettings(style="leading"))
    assert pair_counts(zero_shot)["query"] == 0
    dsi_qg = build_pairs(["a"], [text], desc, RehearsalSettings(), queries={"a": ["labelled q"]}, pseudo_queries=True)
    assert [p.text for p in dsi_qg if p.kind == "query"] == ["q one", "q two", "labelled q"]
    assert all(p.ed == "topic query" and p.doc_id == "a" for p in pairs)
    sentences = [p.text for p in pairs if p.kind == "sentence"]
    assert sentences[0] == "Sentence one talks about its topic." and sentences[-1].startswith("Sentence six ")
    passages = [p.text for p in pairs if p.kind == "passage"]
    assert passages[1].startswith("Sentence three ") and "Sentence seven " in passages[1]  # stride 2
    assert "Sentence eight " not in passages[1]  # 5 sentences
    with pytest.raises(KeyError, match="'b' has no ED"):
        build_pairs(["b"], [text], desc, RehearsalSettings())
    assert len(replay_sample(pairs, 4, seed=1)) == 4 and replay_sample(pairs, 4, 1) == replay_sample(pairs, 4, 1)
    assert replay_sample(pairs, 4, 1) != replay_sample(pairs, 4, 2)


def test_causal_encoding_labels_only_the_ed_and_eos(tiny):
    _, tok = tiny
    enc = IdEncoder(tok, is_encoder_decoder=False, max_input_tokens=12)
    ex = enc.example(IndexPair("query", "where do cats sleep all day long", "cat sleep", "d1"))
    assert len(ex.input_ids) == 12 + len(enc.separator)  # cut to max_input_tokens, then the separator
    assert ex.ed_ids == tok("cat sleep", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = enc.collate([ex, enc.example(IndexPair("document", "x", "ab", "d2"))])
    row = batch["labels"][1]
    labelled = row[row != IGNORE].tolist()
    assert labelled == tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert batch["attention_mask"][1].sum() == len(enc.input_ids("document", "x")) + len(labelled)


def test_loss_is_label_smoothed_cross_entropy_over_ed_tokens(tiny):
    model, tok = tiny
    enc = IdEncoder(tok, is_encoder_decoder=False)
    batch = enc.collate([enc.example(IndexPair("query", "cats", "purr", "d1")),
                         enc.example(IndexPair("document", "rivers and seas", "water", "d2"))])
    loss, stats = index_loss_fn(model, 0.1)(batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.0 <= stats["token_accuracy"] <= 1.0


def _trained_index(tmp_path, eds):
    model, tok = build_tiny_model(TinyModelConfig(seed=7, hidden_size=64, intermediate_size=128))
    desc = _descriptions(eds)
    index = SedsiIndex.create(model, tok, desc, {d: d.upper() for d in eds}, max_input_tokens=64)
    pairs = build_pairs(list(DOCS), list(DOCS.values()), desc, RehearsalSettings(style="leading"))
    cfg = TrainerConfig(lr=3e-3, batch_size=8, max_steps=80, warmup_ratio=0.0, checkpoint_every=1000)
    result = train_index(index, pairs, cfg, tmp_path / "ckpt", label_smoothing=0.1, progress=False)
    return index, pairs, result


def test_an_index_learns_a_small_collection_and_survives_save_and_load(tmp_path):
    eds = {"d1": "cat purr", "d2": "nile river", "d3": "etna lava", "d4": "bee honey"}
    index, pairs, result = _trained_index(tmp_path, eds)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    sentences = {p.doc_id: p.text for p in pairs if p.kind == "sentence"}
    queries = {f"q{d}": sentences[d] for d in DOCS}
    qrels = {f"q{d}": {d: 1} for d in DOCS}
    metrics, run = index.evaluate(queries, qrels, num_beams=4)
    assert metrics["hits@1"] >= 0.75  # memorised: a training sentence retrieves its document
    assert metrics["hits@10"] == 1.0  # 4 EDs, 4 beams, exact search: every document is ranked
    hits = index.search([sentences["d2"]], k=2, num_beams=4)[0]
    assert [h.ed for h in hits] == [eds[h.doc_id] for h in hits] and hits[0].title == hits[0].doc_id.upper()
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))

    index.save(tmp_path / "index", pairs=pairs)
    loaded = SedsiIndex.load(tmp_path / "index")
    assert loaded.length_penalty == index.length_penalty == 1.0  # the ranking it was built with
    assert loaded.search([sentences["d2"]], k=2, num_beams=4)[0] == hits
    sums = loaded.search([sentences["d2"]], k=4, num_beams=4, length_penalty=0.0)[0]
    by_ed = {h.ed: h.score for h in loaded.search([sentences["d2"]], k=4, num_beams=4)[0]}
    for h in sums:  # the same EDs, scored by plain sums: mean x length (EOS included)
        assert h.score == pytest.approx(by_ed[h.ed] * len(loaded.encoder.ed_ids(h.ed)), abs=1e-4)
    assert SedsiIndex.load_pairs(tmp_path / "index") == pairs
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        SedsiIndex.load(tmp_path)


def test_a_shared_ed_returns_all_its_documents_and_extension_adds_new_ones(tiny):
    model, tok = tiny
    index = SedsiIndex.create(model, tok, _descriptions({"a": "same", "b": "same", "c": "other"}), {})
    assert len(index.trie) == 2
    hits = index.search(["anything"], k=10, num_beams=2)[0]
    assert sorted(h.doc_id for h in hits) == ["a", "b", "c"]
    shared = [h.doc_id for h in hits if h.ed == "same"]
    assert shared == ["a", "b"]  # consecutive ranks, sorted by doc id
    bigger = index.extended(_descriptions({"d": "new one", "e": "other"}), {"d": "D"})
    assert len(bigger.trie) == 3 and bigger.eds["e"] == "other" and len(index.trie) == 2
    with pytest.raises(ValueError, match="already indexed"):
        bigger.extended(_descriptions({"a": "x"}), {})


def test_heldout_table_spreads_a_capped_sample_over_documents():
    desc = _descriptions({f"d{i}": f"ed {i}" for i in range(10)}, heldout={f"d{i}": [f"q{i}a", f"q{i}b"] for i in range(10)})
    table = heldout_table(desc, limit=5)
    assert len(table) == 5 and table["doc_id"].nunique() == 5
    queries, qrels = as_qrels(table)
    assert all(qrels[q] == {d: 1} for q, d in zip(table["qid"], table["doc_id"], strict=True))
    assert set(queries.values()) <= {q for held in desc.heldout for q in held}


def test_a_seq2seq_backbone_trains_searches_and_reloads(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    from components.models.tiny import byte_tokenizer

    tok = byte_tokenizer()
    config = T5Config(vocab_size=len(tok), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=2,
                      decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    eds = {"d1": "cat purr", "d2": "nile river", "d3": "etna lava", "d4": "bee honey"}
    desc = _descriptions(eds)
    index = SedsiIndex.create(model, tok, desc, {}, max_input_tokens=64)
    assert index.encoder.is_encoder_decoder and index.encoder.separator == []
    pairs = build_pairs(list(DOCS), list(DOCS.values()), desc, RehearsalSettings(style="leading"))
    cfg = TrainerConfig(lr=3e-3, batch_size=8, max_steps=60, warmup_ratio=0.0, checkpoint_every=1000)
    result = train_index(index, pairs, cfg, tmp_path / "ckpt", progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    sentences = {p.doc_id: p.text for p in pairs if p.kind == "sentence"}
    hits = index.search(list(sentences.values()), k=4, num_beams=4)
    assert all(h.ed in eds.values() for row in hits for h in row)
    assert sum(row[0].doc_id == d for row, d in zip(hits, sentences, strict=True)) >= 2  # learnt, not chance
    index.save(tmp_path / "t5")
    assert SedsiIndex.load(tmp_path / "t5").search(list(sentences.values()), k=4, num_beams=4) == hits
    # A saved seq2seq model is a valid `sedsi.backbone` spec.
    from components.models import load_model
    from semflow.config import ModelConfig

    loaded = load_model(ModelConfig(spec=str(tmp_path / "t5" / "model"), device="cpu"))
    assert loaded.model.config.is_encoder_decoder
