"""Stage generate_teacher: the teacher answers the prompts (batched, chat template, greedy or sampled)."""

from __future__ import annotations

import mlflow

from semflow.caching import StageKey
from semflow.config import GenerationConfig, ModelConfig
from semflow.runtime import RunContext
from semflow.store import StageManifest
from tasks._stage import Outputs, cached_stage, read_output, run_stage


def key(teacher: ModelConfig, generation: GenerationConfig, prepare_data: StageManifest) -> StageKey:
    return StageKey(stage="generate_teacher", config={"teacher": teacher, "generation": generation},
                    upstream={"prompts": prepare_data.output("prompts").digest})


@cached_stage(key)
def generate_teacher(teacher: ModelConfig, generation: GenerationConfig, prepare_data: StageManifest,
                     run: RunContext) -> StageManifest:
    # Heavy imports here, not at module level: a cached run never loads torch or transformers.
    from components.generation import answer_prompts
    from components.models import load_model

    def body(out: Outputs):
        prompts = read_output(prepare_data, "prompts")
        prompts = prompts[prompts["split"].isin(generation.splits)].reset_index(drop=True)
        loaded = load_model(teacher, run.model_cache)
        mlflow.set_tag("semflow.model_origin", loaded.origin)  # gguf-convert | cache | local | hub | tiny
        responses, metrics = answer_prompts(loaded.model, loaded.tokenizer, prompts, generation)
        out.table("responses", responses)
        metrics["model_load_seconds"] = loaded.load_seconds
        return metrics, {"responses": responses}

    return run_stage(key(teacher, generation, prepare_data), run, body)
