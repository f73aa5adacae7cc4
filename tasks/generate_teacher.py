"""Stage 2: the teacher answers the prompts (batched, chat template, greedy or sampled)."""

from __future__ import annotations

from pathlib import Path

import mlflow

from semflow.caching import stage_key
from semflow.config import GenerationConfig, ModelConfig
from semflow.runtime import RunContext
from semflow.store import OutputRef, StageManifest
from tasks._stage import cached_stage, output_path, run_stage

STAGE = "generate_teacher"
MODULES = ("components.generation", "components.models", "components.data", "tasks.generate_teacher", "tasks._stage")


def cache_key(teacher: ModelConfig, generation: GenerationConfig, data: StageManifest) -> str:
    return stage_key(
        STAGE,
        {"teacher": teacher, "generation": generation},
        {"prompts": data.output("prompts").digest},
        MODULES,
    )


@cached_stage(STAGE, cache_key)
def generate_teacher(
    teacher: ModelConfig, generation: GenerationConfig, data: StageManifest, run: RunContext
) -> StageManifest:
    # Heavy imports here, not at module level: a cached run never loads torch or transformers.
    from components.data import read_dataset, write_dataset
    from components.generation import format_prompts, generate
    from components.models import load_model

    def body(tmp: Path):
        prompts = read_dataset(output_path(data, "prompts"))
        prompts = prompts[prompts["split"].isin(generation.splits)].reset_index(drop=True)
        loaded = load_model(teacher, run.model_cache)
        mlflow.set_tag("semflow.model_origin", loaded.origin)  # gguf-convert | cache | local | hub | tiny
        rendered = format_prompts(
            loaded.tokenizer, prompts["instruction"].tolist(), prompts["input"].tolist(), generation.system_prompt
        )
        out = generate(loaded.model, loaded.tokenizer, rendered, generation)
        responses = prompts.assign(
            response=out.texts,
            prompt_tokens=out.prompt_tokens,
            response_tokens=out.new_tokens,
            finished=out.finished,
            prompt_tokens_cut=out.truncated,
        )
        info = write_dataset(responses, tmp / "responses.parquet")
        n = max(len(responses), 1)
        metrics = {
            "responses": float(len(responses)),
            "tokens_per_second": out.tokens_per_second,
            "generation_seconds": out.seconds,
            "model_load_seconds": loaded.load_seconds,
            "response_tokens_total": float(sum(out.new_tokens)),
            "response_tokens_mean": sum(out.new_tokens) / n,
            "finished_share": sum(out.finished) / n,
            "prompts_truncated": float(sum(1 for t in out.truncated if t)),
        }
        outputs = {"responses": OutputRef(path="responses.parquet", digest=info.digest, rows=info.rows)}
        return outputs, metrics, {"responses": responses}

    params = {"teacher": teacher, "generation": generation, "upstream.prompts": data.output("prompts").digest}
    return run_stage(STAGE, cache_key(teacher, generation, data), run, params, body)
