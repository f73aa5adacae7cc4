"""Stage 7: SE-DSI indexing. The teacher writes an Elaborative Description (a query) per document as its
identifier; the backbone (the distilled student by default) learns document, rehearsal passages and
sentences, and queries -> ED; retrieval is beam search constrained by a prefix trie over the EDs. The
index is evaluated on held-out pseudo-queries (and on labelled queries when `sedsi.queries` names them),
beside BM25 on the same queries, and registered in MLflow as `semflow-index` (components/sedsi)."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from semflow.caching import file_digest, stage_key
from semflow.config import GenerationConfig, ModelConfig, SedsiConfig
from semflow.runtime import RunContext
from semflow.store import ArtifactStore, OutputRef, StageManifest
from tasks._stage import cached_stage, digest_dir, load_student, output_path, register_model, run_stage

STAGE = "sedsi_index"
MODULES = ("components.sedsi", "components.distill.trainer", "components.generation", "components.models",
           "tasks.sedsi_index", "tasks._stage")
REGISTERED_MODEL = "semflow-index"
SYSTEMS = ("sedsi", "bm25")
log = logging.getLogger(__name__)


def cache_key(teacher: ModelConfig, generation: GenerationConfig, sedsi: SedsiConfig, data: StageManifest,
              student: StageManifest | None) -> str:
    upstream = {"documents": data.output("documents").digest}
    if sedsi.backbone is None:
        if student is None:
            raise ValueError("sedsi.backbone is unset (the distilled student) but no student manifest was given")
        upstream["student"] = student.output("student").digest
    if sedsi.queries is not None:
        upstream["queries"] = _file_digest(sedsi.queries.queries)
        upstream["qrels"] = _file_digest(sedsi.queries.qrels)
    config = {"teacher": teacher, "sedsi": sedsi, "engine": generation.engine}
    return stage_key(STAGE, config, upstream, MODULES)


def _file_digest(path: str) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"sedsi.queries: {path} does not exist")
    return file_digest(path)


@cached_stage(STAGE, cache_key)
def sedsi_index(teacher: ModelConfig, generation: GenerationConfig, sedsi: SedsiConfig, data: StageManifest,
                student: StageManifest | None, run: RunContext) -> StageManifest:
    key = cache_key(teacher, generation, sedsi, data, student)
    work = ArtifactStore(run.artifact_root).work_dir(STAGE, key)

    def body(tmp: Path):
        return build(teacher, generation, sedsi, data, student, run, work, tmp)

    params = {"teacher": teacher, "sedsi": sedsi, "upstream.documents": data.output("documents").digest}
    return run_stage(STAGE, key, run, params, body)


def build(teacher: ModelConfig, generation: GenerationConfig, sedsi: SedsiConfig, data: StageManifest,
          student: StageManifest | None, run: RunContext, work: Path, tmp: Path):
    import gc

    import pandas as pd

    from components.data import read_dataset, write_dataset
    from components.models import load_model
    from components.sedsi import BM25Index, RehearsalSettings, evaluate_run, generate_descriptions
    from components.sedsi.index import SedsiIndex, as_qrels, heldout_table, train_index
    from components.sedsi.training import build_pairs, pair_counts

    docs = read_dataset(output_path(data, "documents"))
    if docs.empty:
        raise ValueError("sedsi_index: data.documents is empty; there is nothing to index")
    doc_ids, texts = docs["doc_id"].astype(str).tolist(), docs["text"].tolist()
    titles = dict(zip(doc_ids, docs["title"].fillna("").astype(str), strict=True))

    # 1. Labelled queries, if any, read first so that bad input fails before any model work: a share may
    #    train (Query -> ED of each relevant document), the rest evaluate.
    labelled_eval, train_queries, query_skips = None, {}, {}
    if sedsi.queries is not None:
        from components.sedsi.queries import load_queries, split_queries

        q = sedsi.queries
        labelled = load_queries(q.queries, q.qrels, set(doc_ids), format=q.format, on_unknown_doc=q.on_unknown_doc)
        query_skips = labelled.skipped
        train_part, labelled_eval = split_queries(labelled, q.train_share, seed=sedsi.train.seed)
        for qid, text in train_part.queries.items():
            for doc_id, grade in train_part.qrels[qid].items():
                if grade >= 1:
                    train_queries.setdefault(doc_id, []).append(text)

    # 2. EDs from the teacher (the query generator), then the teacher leaves memory.
    t = load_model(teacher, run.model_cache)
    descriptions = generate_descriptions(t.model, t.tokenizer, doc_ids, texts, ed_settings(sedsi, generation))

    # 3. Backbone: the distilled student (a fresh copy of its weights) or any configured model.
    if sedsi.backbone is None:
        backbone = load_student(student, t, teacher, run.model_cache)
    else:
        backbone = load_model(sedsi.backbone, run.model_cache)
    del t
    gc.collect()

    rehearsal = RehearsalSettings(**sedsi.rehearsal.model_dump())
    pairs = build_pairs(doc_ids, texts, descriptions, rehearsal, seed=sedsi.train.seed, queries=train_queries)
    index = SedsiIndex.create(backbone.model, backbone.tokenizer, descriptions, titles, sedsi.max_input_tokens,
                              lineage=[{"stage": STAGE, "backbone": backbone.name, "documents": len(doc_ids)}])
    log_step = lambda step, metrics: mlflow.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)  # noqa: E731
    result = train_index(index, pairs, sedsi.train, work / "checkpoints", sedsi.label_smoothing, on_log=log_step)

    # 4. Evaluation: SE-DSI and BM25 on the same queries.
    heldout = heldout_table(descriptions, sedsi.max_eval_queries)
    query_sets = {}
    if len(heldout):
        query_sets["pseudo"] = as_qrels(heldout)
    if labelled_eval is not None and labelled_eval.queries:
        query_sets["labelled"] = (labelled_eval.queries, labelled_eval.qrels)
    if not query_sets:
        raise ValueError("sedsi_index: no evaluation query (set sedsi.ed.heldout > 0 or give sedsi.queries)")
    bm25 = BM25Index.build(doc_ids, [f"{titles[d]} {x}" for d, x in zip(doc_ids, texts, strict=True)])
    rows, samples = [], []
    for name, (queries, qrels) in query_sets.items():
        qids = list(queries)
        sedsi_metrics, sedsi_run = index.evaluate(queries, qrels, sedsi.num_beams, sedsi.search_batch_size)
        bm25_hits = bm25.search([queries[q] for q in qids], k=100)
        bm25_run = {q: [d for d, _ in hits] for q, hits in zip(qids, bm25_hits, strict=True)}
        bm25_metrics = evaluate_run(bm25_run, qrels)
        for system, metrics in (("sedsi", sedsi_metrics), ("bm25", bm25_metrics)):
            rows.append({"queries": name, "system": system, "n_queries": len(qrels), **metrics})
        for qid in qids[: sedsi.samples]:
            relevant = sorted(d for d, g in qrels[qid].items() if g >= 1)
            samples.append({
                "queries": name, "qid": qid, "query": queries[qid], "relevant": relevant,
                "sedsi_top3": [f"{d}: {index.eds[d]}" for d in sedsi_run[qid][:3]],
                "bm25_top3": [f"{d}: {titles[d]}" for d in bm25_run[qid][:3]],
            })
    table = pd.DataFrame(rows)
    sample_table = pd.DataFrame(samples)

    # 5. The index folder, tables, MLflow.
    index.save(tmp / "index", pairs=pairs, eval_queries=heldout)
    d_info = write_dataset(pd.DataFrame(descriptions.rows()), tmp / "descriptions.parquet")
    m_info = write_dataset(table, tmp / "metrics.parquet")
    s_info = write_dataset(sample_table, tmp / "samples.parquet")
    h_info = write_dataset(pd.DataFrame(result.history), tmp / "history.parquet")

    counts = pair_counts(pairs)
    n = len(doc_ids)
    metrics = {
        "documents": float(n),
        "ed.collision_rate": descriptions.collision_rate,
        "ed.distinct": float(len(set(descriptions.eds))),
        "ed.from_text": float(len(descriptions.from_text)),
        "ed.mean_tokens": sum(len(index.encoder.ed_ids(e)) - 1 for e in descriptions.eds) / n,
        "ed.candidates_per_doc": sum(map(len, descriptions.candidates)) / n,
        "rc.passages_per_doc": counts["passage"] / n,
        "rc.sentences_per_doc": counts["sentence"] / n,
        **{f"pairs.{kind}": float(c) for kind, c in counts.items()},
        "train.steps": float(result.steps),
        "train.resumed_from_step": float(result.resumed_from),
        "train.tokens_per_second": result.tokens / result.seconds if result.seconds else 0.0,
        **{f"queries_skipped.{k}": float(v) for k, v in query_skips.items()},
    }
    for row in rows:
        for metric in ("hits@1", "hits@10", "mrr@10", "mrr@100"):
            # MLflow keys allow no "@": hits@10 is logged as hits_at_10
            metrics[f"{row['queries']}.{row['system']}.{metric.replace('@', '_at_')}"] = row[metric]
    mlflow.log_table(table, artifact_file="sedsi/metrics.json")
    mlflow.log_table(sample_table, artifact_file="sedsi/samples.json")
    mlflow.log_artifacts(str(tmp / "index"), "index")
    mlflow.set_tags({"semflow.sedsi.backbone": backbone.name, "semflow.sedsi.rehearsal": sedsi.rehearsal.style})
    tags = {k: f"{v:.4f}" for k, v in metrics.items() if k.split(".")[1:2] == ["sedsi"]}
    metrics["registered_version"] = float(register_model(
        REGISTERED_MODEL, "SE-DSI indexes built by semflow", mlflow.active_run().info.run_id, "index", tags))
    outputs = {
        "index": OutputRef(path="index", digest=digest_dir(tmp / "index")),
        "descriptions": OutputRef(path="descriptions.parquet", digest=d_info.digest, rows=d_info.rows),
        "metrics": OutputRef(path="metrics.parquet", digest=m_info.digest, rows=m_info.rows),
        "samples": OutputRef(path="samples.parquet", digest=s_info.digest, rows=s_info.rows),
        "history": OutputRef(path="history.parquet", digest=h_info.digest, rows=h_info.rows),
    }
    log.info("sedsi_index: %d documents, ED collision rate %.3f\n%s", n, descriptions.collision_rate,
             table.to_string(index=False))
    return outputs, metrics, {"metrics": table, "samples": sample_table}


# ------------------------------------------------------------------------------ incremental indexing
ADD_STAGE = "sedsi_index_add"


def index_manifests(artifact_root: str) -> list[StageManifest]:
    """Every complete index artifact (built by the pipeline or grown by `index add`), oldest first."""
    store = ArtifactStore(artifact_root)
    found = [m for stage in (STAGE, ADD_STAGE) for m in store.manifests(stage)]
    return sorted(found, key=lambda m: m.created)


def add_to_index(teacher: ModelConfig, generation: GenerationConfig, sedsi: SedsiConfig, parent: StageManifest,
                 docs_path: str, run: RunContext) -> StageManifest:
    """A new index: `parent` plus the documents of `docs_path` (JSONL/CSV/Parquet with doc_id, text, title),
    with the forgetting report (components.sedsi.index.add_documents). The parent artifact is not changed."""
    from components.data import build_documents, content_digest
    from semflow.config import FileSource

    docs = build_documents(FileSource(path=docs_path))  # validated: text required, doc ids unique
    if docs.empty:
        raise ValueError(f"{docs_path}: no document to add")
    config = {"teacher": teacher, "sedsi": sedsi, "engine": generation.engine}
    key = stage_key(ADD_STAGE, config, {"parent": parent.digest, "documents": content_digest(docs)}, MODULES)
    work = ArtifactStore(run.artifact_root).work_dir(ADD_STAGE, key)

    def body(tmp: Path):
        import pandas as pd

        from components.data import write_dataset
        from components.models import load_model
        from components.sedsi import RehearsalSettings, generate_descriptions
        from components.sedsi.index import SedsiIndex, add_documents

        folder = output_path(parent, "index")
        index = SedsiIndex.load(folder, device=_device(teacher))
        doc_ids = docs["doc_id"].astype(str).tolist()
        clash = [d for d in doc_ids if d in index.eds]
        if clash:
            raise ValueError(f"{docs_path}: {len(clash)} doc ids are already in the index (first: {clash[:5]})")
        texts = docs["text"].tolist()
        titles = dict(zip(doc_ids, docs["title"].fillna("").astype(str), strict=True))
        t = load_model(teacher, run.model_cache)
        descriptions = generate_descriptions(t.model, t.tokenizer, doc_ids, texts, ed_settings(sedsi, generation))
        del t
        old_eval = (pd.read_parquet(folder / "eval_queries.parquet") if (folder / "eval_queries.parquet").is_file()
                    else pd.DataFrame(columns=["qid", "query", "doc_id"]))
        log_step = lambda step, metrics: mlflow.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)  # noqa: E731
        result = add_documents(
            index, SedsiIndex.load_pairs(folder), old_eval, descriptions, texts, titles,
            RehearsalSettings(**sedsi.rehearsal.model_dump()), sedsi.train, work / "checkpoints",
            replay_ratio=sedsi.replay_pairs, label_smoothing=sedsi.label_smoothing, num_beams=sedsi.num_beams,
            batch_size=sedsi.search_batch_size, seed=sedsi.train.seed, max_steps=sedsi.add_steps, on_log=log_step,
        )
        result.index.save(tmp / "index", pairs=result.pairs, eval_queries=result.eval_queries)
        d_info = write_dataset(pd.DataFrame(descriptions.rows()), tmp / "descriptions.parquet")
        metrics = {k.replace("@", "_at_"): v for k, v in result.report.items()}
        metrics["ed.collision_rate"] = descriptions.collision_rate
        mlflow.set_tags({"semflow.sedsi.parent": parent.uri, "semflow.sedsi.documents_file": str(docs_path)})
        mlflow.log_artifacts(str(tmp / "index"), "index")
        metrics["registered_version"] = float(register_model(
            REGISTERED_MODEL, "SE-DSI indexes built by semflow", mlflow.active_run().info.run_id, "index",
            {"grown_from": parent.key, "documents_added": str(len(doc_ids))}))
        report = pd.DataFrame([{"measure": k, "value": v} for k, v in result.report.items()])
        outputs = {
            "index": OutputRef(path="index", digest=digest_dir(tmp / "index")),
            "descriptions": OutputRef(path="descriptions.parquet", digest=d_info.digest, rows=d_info.rows),
        }
        return outputs, metrics, {"report": report}

    params = {"parent": parent.uri, "documents": docs_path, "sedsi": sedsi}
    return run_stage(ADD_STAGE, key, run, params, body)


def ed_settings(sedsi: SedsiConfig, generation: GenerationConfig):
    from components.sedsi import EdSettings

    return EdSettings(**sedsi.ed.model_dump(), engine=generation.engine)


def _device(model_cfg: ModelConfig) -> str:
    from components.models import pick_device

    return str(pick_device(model_cfg.device))
