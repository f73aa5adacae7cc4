"""Checks that run before any model loads, so bad input fails in seconds, not after an hour of stages.

- `check_config(cfg)`, before the first stage: what the config alone can tell (the pruned student's
  layer indices against the teacher's own config, read without loading weights).
- `check_prepared(cfg, prepare_data)`, right after data prep: what needs the prepared inputs (labelled
  query files parse and name documents of the collection).
Data prep itself validates every record (file:line:field), unique ids, and that every corpus has tokens.
"""

from __future__ import annotations

from semflow.config import ConfigError, PipelineConfig
from semflow.store import StageManifest


def check_config(cfg: PipelineConfig) -> None:
    student = cfg.student
    if student.init == "prune" and student.keep_layers is not None:
        from components.models.layers import num_layers

        layers = num_layers(cfg.teacher)
        bad = [i for i in student.keep_layers if layers is not None and not 0 <= i < layers]
        if bad:
            raise ConfigError(f"student.keep_layers: {bad} out of range: the teacher {cfg.teacher.spec!r} has "
                              f"{layers} layers (indices 0..{layers - 1})")
        if len(set(student.keep_layers)) != len(student.keep_layers):
            raise ConfigError(f"student.keep_layers: {student.keep_layers} repeats a layer")


def check_prepared(cfg: PipelineConfig, prepare_data: StageManifest) -> None:
    if cfg.sedsi.enabled and cfg.sedsi.queries is not None:
        from components.data import read_dataset
        from components.sedsi.queries import load_queries
        from semflow.store import local_dir

        q = cfg.sedsi.queries
        documents = read_dataset(local_dir(prepare_data) / prepare_data.output("documents").path)
        doc_ids = documents["doc_id"].astype(str)
        load_queries(q.queries, q.qrels, set(doc_ids), format=q.format, on_unknown_doc=q.on_unknown_doc)
