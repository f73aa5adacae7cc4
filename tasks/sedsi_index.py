"""Stage sedsi_index: SE-DSI indexing and evaluation (components/sedsi/build.py). The backbone (the
distilled student by default) learns the paper's pairs (document, passage and sentence rehearsal contents,
labelled training queries -> ED; the EDs come from describe_documents); retrieval is beam search
constrained by a prefix trie over the EDs. SE-DSI, BM25 and their fusion are measured on the same query
sets, each named in its metrics (labelled.*, titles.*, pseudo.*), and the index is registered in MLflow
as `semflow-index`. `add_to_index` (the `semflow index add` command) grows an index without a rebuild."""

from __future__ import annotations

import mlflow

from pathlib import Path

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
        upstream.update(queries=_file_digest(sedsi.queries.queries), qrels=_file_digest(sedsi.queries.qrels))
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

    def body(out: Outputs):
        from components.models import load_model
        from components.sedsi import Descriptions
        from components.sedsi.build import build_index, eval_table

        docs = read_output(prepare_data, "documents")
        doc_ids, texts = docs["doc_id"].astype(str).tolist(), docs["text"].tolist()
        titles = dict(zip(doc_ids, docs["title"].fillna("").astype(str), strict=True))
        descriptions = Descriptions.from_rows(read_output(describe_documents, "descriptions").to_dict("records"))
        backbone = (load_stage_model(distill_student, "student", teacher, run.model_cache) if sedsi.backbone is None
                    else load_model(sedsi.backbone, run.model_cache))
        log_step = lambda step, m: mlflow.log_metrics({f"train/{k}": v for k, v in m.items()}, step=step)  # noqa: E731
        built = build_index(backbone.model, backbone.tokenizer, doc_ids, texts, titles, descriptions, sedsi,
                            work_dir(stage_key, run) / "checkpoints", on_log=log_step,
                            lineage=[{"stage": "sedsi_index", "backbone": backbone.name, "documents": len(doc_ids)}])
        built.index.save(out.root / "index", pairs=built.pairs, eval_queries=eval_table(descriptions, sedsi.max_eval_queries))
        out.folder("index")
        for name in ("table", "samples", "history"):
            out.table({"table": "metrics"}.get(name, name), getattr(built, name))
        mlflow.log_table(built.table, artifact_file="sedsi/metrics.json")
        mlflow.log_table(built.samples, artifact_file="sedsi/samples.json")
        mlflow.log_artifacts(str(out.root / "index"), "index")
        mlflow.set_tags({"semflow.sedsi.backbone": backbone.name, "semflow.sedsi.rehearsal": sedsi.rehearsal.style,
                         "semflow.sedsi.headline_queries": built.headline, "semflow.sedsi.pairs": sedsi.pairs})
        tags = {k: f"{v:.4f}" for k, v in built.metrics.items() if k.split(".")[1:2] == ["sedsi"]}
        metrics = {**built.metrics, "registered_version": float(register_model(
            REGISTERED_MODEL, "SE-DSI indexes built by semflow", mlflow.active_run().info.run_id, "index", tags))}
        return metrics, {"metrics": built.table, "samples": built.samples}

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

    def body(out: Outputs):
        import pandas as pd

        from components.models import load_model, pick_device
        from components.sedsi import SedsiIndex, generate_descriptions
        from components.sedsi.index import add_documents

        folder = output_path(parent, "index")
        index = SedsiIndex.load(folder, device=str(pick_device(teacher.device)))
        doc_ids, texts = docs["doc_id"].astype(str).tolist(), docs["text"].tolist()
        clash = [d for d in doc_ids if d in index.eds]
        if clash:
            raise ValueError(f"{docs_path}: {len(clash)} doc ids are already in the index (first: {clash[:5]})")
        titles = dict(zip(doc_ids, docs["title"].fillna("").astype(str), strict=True))
        t = load_model(teacher, run.model_cache)
        descriptions = generate_descriptions(t.model, t.tokenizer, doc_ids, texts, sedsi.ed)
        del t
        old_eval = (pd.read_parquet(folder / "eval_queries.parquet") if (folder / "eval_queries.parquet").is_file()
                    else pd.DataFrame(columns=["qid", "query", "doc_id"]))
        log_step = lambda step, m: mlflow.log_metrics({f"train/{k}": v for k, v in m.items()}, step=step)  # noqa: E731
        result = add_documents(
            index, SedsiIndex.load_pairs(folder), old_eval, descriptions, texts, titles, sedsi.rehearsal, sedsi.train,
            work_dir(add_key, run) / "checkpoints", replay_ratio=sedsi.replay_pairs,
            label_smoothing=sedsi.label_smoothing, num_beams=sedsi.num_beams, batch_size=sedsi.search_batch_size,
            seed=sedsi.train.seed, max_steps=sedsi.add_steps, on_log=log_step, pseudo_queries=sedsi.pairs == "dsi_qg",
        )
        result.index.save(out.root / "index", pairs=result.pairs, eval_queries=result.eval_queries)
        out.folder("index")
        out.table("descriptions", pd.DataFrame(descriptions.rows()))
        metrics = {k.replace("@", "_at_"): v for k, v in result.report.items()}
        metrics.update({"ed.collision_rate": descriptions.collision_rate, "ed.generic_share": descriptions.generic_share})
        mlflow.set_tags({"semflow.sedsi.parent": parent.uri, "semflow.sedsi.documents_file": str(docs_path)})
        mlflow.log_artifacts(str(out.root / "index"), "index")
        metrics["registered_version"] = float(register_model(
            REGISTERED_MODEL, "SE-DSI indexes built by semflow", mlflow.active_run().info.run_id, "index",
            {"grown_from": parent.key, "documents_added": str(len(doc_ids))}))
        report = pd.DataFrame([{"measure": k, "value": v} for k, v in result.report.items()])
        return metrics, {"report": report}

    return run_stage(add_key, run, body)
