"""SE-DSI (Tang et al., KDD 2023, arXiv 2305.15115): generative retrieval whose document identifiers are
Elaborative Descriptions (generated queries, Sec. 3.2), trained on rehearsal contents (Sec. 3.3) and labelled
queries (Sec. 3.4), decoded by trie-constrained beam search, evaluated beside BM25 and their fusion.

Modules: descriptions (ED generation and scoring), rehearsal (passages/sentences), training (pairs,
encoding, loss), trie (the prefix trie), retrieve (constrained search: decoding.py shared, beam_search.py
the trie engine, logits_processor.py the `generate` engine), index (the saved index: build, search,
extend), build (one index trained and measured), evaluation (query sets, the systems side by side),
fusion (reciprocal-rank fusion), metrics (Hits@k, MRR@k, paired bootstrap), bm25 (the baseline),
queries (labelled queries and qrels). Settings are the config models of semflow/config/sedsi.py.

Usage::

    from components.sedsi import BM25Index, RehearsalSettings, evaluate_run, expand_rankings, rehearsal_contents

    eds = generate_descriptions(teacher, tokenizer, doc_ids, texts, EdSettings())
    index = SedsiIndex.create(model, tokenizer, eds, titles)
    train_index(index, build_pairs(doc_ids, texts, eds, RehearsalSettings()), TrainerConfig(), "ckpt")
    index.search(["a query"], k=10)

    rc = rehearsal_contents(doc_text, RehearsalSettings(style="leading"))    # passages + sentences -> ED pairs
    docs = expand_rankings(beam_eds, ed_to_docs)                             # ranked EDs -> ranked doc ids
    scores = evaluate_run(dict(zip(qids, docs)), qrels)                      # hits@1/10, mrr@3/10/20
"""

from components.sedsi.bm25 import BM25Index
from components.sedsi.metrics import DEFAULT_METRICS, collision_rate, evaluate_run, expand_rankings, invert_eds
from components.sedsi.rehearsal import (
    STYLES,
    Rehearsal,
    RehearsalSettings,
    passages,
    rehearsal_contents,
    select_rehearsal,
    split_sentences,
    textrank_scores,
)
from components.sedsi.descriptions import Descriptions, EdSettings, generate_descriptions
from components.sedsi.fusion import reciprocal_rank_fusion
from components.sedsi.index import Hit, SedsiIndex, train_index
from components.sedsi.retrieve import TrieLogitsProcessor, constrained_search
from components.sedsi.training import IdEncoder, IndexPair, build_pairs, index_loss_fn
from components.sedsi.trie import IdTrie, TrieError
