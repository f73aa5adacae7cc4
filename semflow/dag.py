"""The pipeline's DAG, declared once.

Each stage names its task module (`tasks.<stage>`), the upstream stages whose manifests it reads and
the config sections it takes. Those names *are* the task's parameter names: inputs are bound by name,
never by position, and `tests/flows/test_dag.py` checks every task's signature against its entry here.
flows/pipeline.py, `semflow stages`, `semflow run --until/--only/--dry-run`, the GPU-pool dispatch
and the diagram in README.md and docs/pipeline.md all read this table. Adding a stage is one entry
here plus its task module.

Usage::

    from semflow.dag import STAGES, enabled, order
    [s.name for s in enabled(cfg)]          # the stages this config runs, in a valid order
    stage("sedsi_index").reads(cfg)         # ("prepare_data", "describe_documents", "distill_student")

This module imports nothing of the pipeline (no Prefect, no torch): the CLI reads it in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


def _always(_cfg: Any) -> bool:
    return True


def _nothing(_cfg: Any) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    upstream: tuple[str, ...] = ()  # stages whose manifests the task reads (parameter names)
    config: tuple[str, ...] = ()  # config sections the task takes (parameter names)
    gpu: bool = False  # heavy: may run on the GPU pool (execution.gpu_stages: pool)
    when: Callable[[Any], bool] = field(default=_always, compare=False)  # does this config run the stage?
    # upstream stages this config does not read (the task gets None for them, and need not wait)
    unread: Callable[[Any], tuple[str, ...]] = field(default=_nothing, compare=False)
    headline: tuple[str, ...] = ()  # metric names (fnmatch patterns) the CLI's stage table shows

    @property
    def task_module(self) -> str:
        return f"tasks.{self.name}"

    def reads(self, cfg: Any) -> tuple[str, ...]:
        """The upstream stages whose manifests this stage reads under `cfg` (enabled ones only)."""
        skip = set(self.unread(cfg))
        return tuple(u for u in self.upstream if u not in skip and stage(u).when(cfg))

    def parameters(self) -> tuple[str, ...]:
        """The task's parameters besides the per-run `run`: config sections, then upstream stages."""
        return (*self.config, *self.upstream)


STAGES: tuple[Stage, ...] = (
    Stage("prepare_data", "prompts, documents and corpora: read, validated, split, content-hashed",
          config=("data",), headline=("prompts.rows", "documents.rows")),
    Stage("generate_teacher", "the teacher answers the prompts (batched)",
          upstream=("prepare_data",), config=("teacher", "generation"), gpu=True,
          headline=("responses", "tokens_per_second")),
    Stage("init_student", "the student pruned from the teacher, healed by a short SFT warm-up",
          upstream=("generate_teacher",), config=("teacher", "student", "generation", "distill"), gpu=True,
          headline=("student_layers", "rougeL_initial", "rougeL_healed")),
    Stage("scrg_correct", "SCRG: student samples corrected at the max-KL disagreeing token, then regenerated",
          upstream=("generate_teacher", "init_student"), config=("teacher", "generation", "scrg"), gpu=True,
          when=lambda cfg: cfg.distill.method == "mgsr", headline=("corrected_share", "mean_d_j")),
    Stage("distill_student", "DAC-KL + span correlation + SFT (MGSR), or a baseline; ROUGE-L before and after",
          upstream=("generate_teacher", "init_student", "scrg_correct"),
          config=("teacher", "generation", "scrg", "distill"), gpu=True,
          headline=("rougeL_before", "rougeL_after", "rougeL_gain*")),
    Stage("describe_documents", "the teacher writes an Elaborative Description (a query) per document",
          upstream=("prepare_data",), config=("teacher", "sedsi"), gpu=True,
          when=lambda cfg: cfg.sedsi.enabled, headline=("documents", "ed.collision_rate", "ed.generic_share")),
    Stage("cade_align", "a word2vec compass, then one embedding per slice against its frozen context matrix",
          upstream=("prepare_data", "generate_teacher", "distill_student"), config=("cade",),
          headline=("slices", "overlap_min", "self_check*")),
    Stage("sedsi_index", "SE-DSI: documents, rehearsal contents and queries -> ED; trie-constrained beam search",
          upstream=("prepare_data", "describe_documents", "distill_student"), config=("teacher", "sedsi"), gpu=True,
          when=lambda cfg: cfg.sedsi.enabled,
          unread=lambda cfg: ("distill_student",) if cfg.sedsi.backbone is not None else (),
          headline=("labelled.sedsi.hits_at_1", "labelled.bm25.hits_at_1", "labelled.hybrid.hits_at_1",
                    "titles.sedsi.hits_at_1", "titles.bm25.hits_at_1", "titles.hybrid.hits_at_1",
                    "pseudo.sedsi.hits_at_1", "pseudo.bm25.hits_at_1")),
)

POOL_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.gpu)
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; the stages are {', '.join(_BY_NAME)}") from None


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def enabled(cfg: Any) -> list[Stage]:
    """The stages `cfg` runs, in declaration order (which is a topological order: checked on import)."""
    return [s for s in STAGES if s.when(cfg)]


def upstream_closure(targets: Iterable[str], cfg: Any) -> set[str]:
    """`targets` and every stage they read from, transitively, under `cfg`."""
    todo, seen = list(targets), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(stage(name).reads(cfg))
    return seen


def _check_order() -> None:
    seen: set[str] = set()
    for s in STAGES:
        missing = [u for u in s.upstream if u not in seen]
        if missing:
            raise RuntimeError(f"semflow.dag: {s.name} is declared before its upstream {missing}")
        seen.add(s.name)


_check_order()


def headline(stage_name: str, metrics: dict[str, float], most: int = 3) -> dict[str, float]:
    """The stage's headline metrics present in `metrics`, in declaration order."""
    from fnmatch import fnmatchcase

    found: dict[str, float] = {}
    for pattern in stage(stage_name).headline:
        for name in sorted(metrics):
            if fnmatchcase(name, pattern) and name not in found:
                found[name] = metrics[name]
    return dict(list(found.items())[:most])


def diagram() -> str:
    """The DAG as a Mermaid flowchart (README.md and docs/pipeline.md embed it; a test keeps them current)."""
    lines = ["flowchart LR"]
    for s in STAGES:
        for u in s.upstream:
            lines.append(f"    {u} --> {s.name}")
    return "\n".join(lines)
