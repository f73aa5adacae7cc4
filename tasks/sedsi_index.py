"""Stage sedsi_index: SE-DSI indexing. The backbone (the distilled student by default) learns document,
rehearsal passages and sentences, and queries -> ED (the EDs come from describe_documents); retrieval
is beam search constrained by a prefix trie over the EDs. The index is evaluated on held-out
pseudo-queries (and on labelled queries when `sedsi.queries` names them), beside BM25 on the same
queries, and registered in MLflow as `semflow-index` (components/sedsi)."""

from __future__ import annotations

from pathlib import Path

import mlflow

from semflow.caching import StageKey, file_digest
from semflow.config import GenerationConfig, ModelConfig, SedsiConfig
from semflow.runtime import RunContext
from semflow.store import ArtifactStore, StageManifest
from semflow.tracking import register_model
from tasks._stage import Outputs, cached_stage, load_stage_model, output_path, read_output, run_stage, work_dir

REGISTERED_MODEL = "semflow-index"


def key(teacher: ModelConfig, sedsi: SedsiConfig, prepare_data: StageManifest, describe_documents: StageManifest,
        distill_student: StageManifest | None) -> StageKey:
    upstream = {"documents": prepare_data.output("documents").digest,
                "descriptions": describe_documents.output("descriptions").digest}
    if sedsi.backbone is None:
        if distill_student is None:
            raise ValueError("sedsi.backbone is unset (the distilled student) but no student manifest was given")
        upstream["student"] = distill_student.output("student").digest
    if sedsi.queries is not None:
        upstream["queries"] = _file_digest(sedsi.queries.queries)
        upstream["qrels"] = _file_digest(sedsi.queries.qrels)
    # the ED settings reach this stage through the descriptions' digest
    config = {"teacher": teacher, "sedsi": sedsi.model_dump(mode="json", exclude={"ed", "enabled"})}
    return StageKey(stage="sedsi_index", config=config, upstream=upstream)


def _file_digest(path: str) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"sedsi.queries: {path} does not exist")
    return file_digest(path)


@cached_stage(key)
def sedsi_index(teacher: ModelConfig, sedsi: SedsiConfig, prepare_data: StageManifest,
                describe_documents: StageManifest, distill_student: StageManifest | None,
                run: RunContext) -> StageManifest:
    stage_key = key(teacher, sedsi, prepare_data, describe_documents, distill_student)
    work = work_dir(stage_key, run)

    def body(out: Outputs):
        import pandas as pd

        from components.models import load_model
        from components.sedsi import BM25Index, Descriptions, RehearsalSettings
        from components.sedsi.evaluation import compare_systems, query_sets
        from components.sedsi.index import SedsiIndex, heldout_table, train_index
        from components.sedsi.training import build_pairs, pair_counts

        docs = read_output(prepare_data, "documents")
        doc_ids, texts = docs["doc_id"].astype(str).tolist(), docs["text"].tolist()
        titles = dict(zip(doc_ids, docs["title"].fillna("").astype(str), strict=True))
        descriptions = Descriptions.from_rows(read_output(describe_documents, "descriptions").to_dict("records"))

        # 1. Labelled queries, if any, read before any model work so that bad input fails first: a share
        #    may train (Query -> ED of each relevant document), the rest evaluate.
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

        # 2. The backbone (the distilled student, or any configured model) learns inputs -> ED.
        if sedsi.backbone is None:
            backbone = load_stage_model(distill_student, "student", teacher, run.model_cache)
        else:
            backbone = load_model(sedsi.backbone, run.model_cache)
        rehearsal = RehearsalSettings(**sedsi.rehearsal.model_dump())
        pairs = build_pairs(doc_ids, texts, descriptions, rehearsal, seed=sedsi.train.seed, queries=train_queries)
        index = SedsiIndex.create(backbone.model, backbone.tokenizer, descriptions, titles, sedsi.max_input_tokens,
                                  lineage=[{"stage": "sedsi_index", "backbone": backbone.name, "documents": len(doc_ids)}])
        log_step = lambda step, metrics: mlflow.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)  # noqa: E731
        result = train_index(index, pairs, sedsi.train, work / "checkpoints", sedsi.label_smoothing, on_log=log_step)

        # 3. SE-DSI and BM25 on the same queries.
        sets = query_sets(descriptions, labelled_eval, sedsi.max_eval_queries)
        bm25 = BM25Index.build(doc_ids, [f"{titles[d]} {x}" for d, x in zip(doc_ids, texts, strict=True)])
        table, samples = compare_systems(index, bm25, sets, sedsi.num_beams, sedsi.search_batch_size, sedsi.samples)

        # 4. The index folder, tables, MLflow.
        index.save(out.root / "index", pairs=pairs, eval_queries=heldout_table(descriptions, sedsi.max_eval_queries))
        out.folder("index")
        out.table("metrics", table)
        out.table("samples", samples)
        out.table("history", pd.DataFrame(result.history))
        counts, n = pair_counts(pairs), len(doc_ids)
        metrics = {
            "documents": float(n),
            "ed.mean_tokens": sum(len(index.encoder.ed_ids(e)) - 1 for e in descriptions.eds) / n,
            "rc.passages_per_doc": counts["passage"] / n,
            "rc.sentences_per_doc": counts["sentence"] / n,
            **{f"pairs.{kind}": float(c) for kind, c in counts.items()},
            "train.steps": float(result.steps),
            "train.resumed_from_step": float(result.resumed_from),
            "train.tokens_per_second": result.tokens / result.seconds if result.seconds else 0.0,
            **{f"queries_skipped.{k}": float(v) for k, v in query_skips.items()},
        }
        for row in table.to_dict("records"):
            for metric in ("hits@1", "hits@10", "mrr@10", "mrr@100"):
                # MLflow keys allow no "@": hits@10 is logged as hits_at_10
                metrics[f"{row['queries']}.{row['system']}.{metric.replace('@', '_at_')}"] = row[metric]
        mlflow.log_table(table, artifact_file="sedsi/metrics.json")
        mlflow.log_table(samples, artifact_file="sedsi/samples.json")
        mlflow.log_artifacts(str(out.root / "index"), "index")
        mlflow.set_tags({"semflow.sedsi.backbone": backbone.name, "semflow.sedsi.rehearsal": sedsi.rehearsal.style})
        tags = {k: f"{v:.4f}" for k, v in metrics.items() if k.split(".")[1:2] == ["sedsi"]}
        metrics["registered_version"] = float(register_model(
            REGISTERED_MODEL, "SE-DSI indexes built by semflow", mlflow.active_run().info.run_id, "index", tags))
        return metrics, {"metrics": table, "samples": samples}

    return run_stage(stage_key, run, body)


# ------------------------------------------------------------------------------ incremental indexing
ADD_STAGE = "sedsi_index_add"


def index_manifests(artifact_root: str) -> list[StageManifest]:
    """Every complete index artifact (built by the pipeline or grown by `index add`), oldest first."""
    store = ArtifactStore(artifact_root)
    found = [m for stage in ("sedsi_index", ADD_STAGE) for m in store.manifests(stage)]
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
    add_key = StageKey(stage=ADD_STAGE, config={"teacher": teacher, "sedsi": sedsi, "engine": generation.engine},
                       upstream={"parent": parent.digest, "documents": content_digest(docs)}, module=__name__)
    work = work_dir(add_key, run)

    def body(out: Outputs):
        import pandas as pd

        from components.models import load_model
        from components.sedsi import RehearsalSettings, generate_descriptions
        from tasks.describe_documents import ed_settings
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
        result.index.save(out.root / "index", pairs=result.pairs, eval_queries=result.eval_queries)
        out.folder("index")
        out.table("descriptions", pd.DataFrame(descriptions.rows()))
        metrics = {k.replace("@", "_at_"): v for k, v in result.report.items()}
        metrics["ed.collision_rate"] = descriptions.collision_rate
        mlflow.set_tags({"semflow.sedsi.parent": parent.uri, "semflow.sedsi.documents_file": str(docs_path)})
        mlflow.log_artifacts(str(out.root / "index"), "index")
        metrics["registered_version"] = float(register_model(
            REGISTERED_MODEL, "SE-DSI indexes built by semflow", mlflow.active_run().info.run_id, "index",
            {"grown_from": parent.key, "documents_added": str(len(doc_ids))}))
        report = pd.DataFrame([{"measure": k, "value": v} for k, v in result.report.items()])
        return metrics, {"report": report}

    return run_stage(add_key, run, body)


def _device(model_cfg: ModelConfig) -> str:
    from components.models import pick_device

    return str(pick_device(model_cfg.device))
