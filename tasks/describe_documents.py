"""Stage describe_documents: the teacher writes Elaborative Descriptions (SE-DSI's document identifiers, Tang
et al., KDD 2023, arXiv 2305.15115, Sec. 3.2): sampled queries per document, the best one under
`sedsi.ed.scorer` the document's ED, the others pseudo-queries (components/sedsi/descriptions.py). It reads
only the teacher and the documents, so it is cached independently of the student and runs beside the
distillation branch."""

from __future__ import annotations

from semflow.caching import StageKey
from semflow.config import ModelConfig, SedsiConfig
from semflow.runtime import RunContext
from semflow.store import StageManifest
from tasks._stage import Outputs, cached_stage, read_output, run_stage


def key(teacher: ModelConfig, sedsi: SedsiConfig, prepare_data: StageManifest) -> StageKey:
    return StageKey(stage="describe_documents",
                    config={"teacher": teacher, "ed": sedsi.ed},  # the ED sampler takes no generation engine
                    upstream={"documents": prepare_data.output("documents").digest})


@cached_stage(key)
def describe_documents(teacher: ModelConfig, sedsi: SedsiConfig, prepare_data: StageManifest,
                       run: RunContext) -> StageManifest:
    import pandas as pd

    from components.models import load_model
    from components.sedsi import generate_descriptions

    def body(out: Outputs):
        docs = read_output(prepare_data, "documents")
        if docs.empty:
            raise ValueError("describe_documents: data.documents is empty; there is nothing to index")
        t = load_model(teacher, run.model_cache)
        descriptions = generate_descriptions(t.model, t.tokenizer, docs["doc_id"].astype(str).tolist(),
                                             docs["text"].tolist(), sedsi.ed)
        table = pd.DataFrame(descriptions.rows())
        out.table("descriptions", table)
        n = len(descriptions.doc_ids)
        metrics = {
            "documents": float(n),
            "ed.collision_rate": descriptions.collision_rate,
            "ed.generic_share": descriptions.generic_share,  # EDs naming nothing of their document (warned)
            "ed.distinct": float(len(set(descriptions.eds))),
            "ed.from_text": float(len(descriptions.from_text)),
            "ed.candidates_per_doc": sum(map(len, descriptions.candidates)) / max(n, 1),
        }
        return metrics, {"descriptions": table[["doc_id", "ed", "candidates"]]}

    return run_stage(key(teacher, sedsi, prepare_data), run, body)
