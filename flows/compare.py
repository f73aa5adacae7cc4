"""`semflow compare`: distillation methods and MGSR ablations side by side on one data set, several seeds
each, scored against the dataset's own references, with paired bootstrap confidence intervals.

Usage::

    from flows.compare import compare, parse_methods
    table = compare("configs/dolly.yaml", ["data.prompts.path=dev.jsonl"], parse_methods("mgsr,sft"), seeds=[0, 1, 2])
    table.rows        # one dict per method and reference row; table.frame() as a DataFrame

What runs: for every (method, seed), the pipeline until `distill_student` with that method's overrides
and `distill.train.seed` / `scrg.seed` set to the seed. Data prep, teacher generation and the healed
student are shared through the cache (their keys do not depend on the method or the seed), SCRG reruns
per seed for the methods that read it, and nothing downstream of distillation (describe_documents,
cade_align, sedsi_index) runs at all.

Scores: ROUGE-L x 100 of the distilled student's greedy test answers against the dataset references
(test prompts without a reference are left out and counted), per prompt averaged over seeds; a row's
score is the mean over prompts. Each row's difference to the best baseline (the baseline method with the
highest score) gets a paired bootstrap 95 % CI over test prompts, and so does its difference to the healed
init (did the distillation beat its own starting point: issue 14's target (a), per method). Reference
rows: the teacher, the healed student every method starts from, and the instruction (+ input) echoed
back as the answer, which shows what ROUGE-L gives for nothing. Every row also reports the share of
answers with a 4-gram repeated 3+ times and distinct-2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BASELINES = ("sft", "seqkd", "kd_fkl", "kd_rkl", "jsd", "skew_fkl", "skew_rkl", "gkd")
ABLATIONS = {  # name -> overrides on top of distill.method=mgsr
    "mgsr-no-scrg": ["distill.scrg_schedule=none"],
    "mgsr-fkl": ["distill.token_loss=forward_kl"],
    "mgsr-no-span": ["distill.w_span=0"],
    "mgsr-fixed-band": ["distill.band_objective=frozen"],
}
METHODS = ("mgsr", *BASELINES, *ABLATIONS)
REFERENCE_ROWS = ("teacher", "healed init", "instruction echo")


class CompareInputError(ValueError):
    """Bad `compare` input (methods, seeds, a data set without references): exit code 2."""


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in (text or "").split(",") if m.strip()]
    if not names:
        raise CompareInputError(f"--methods names no method (got {text!r}); choose from: {', '.join(METHODS)}")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise CompareInputError(f"unknown method(s) {', '.join(map(repr, unknown))}: --methods takes distill.method "
                                f"values and MGSR ablations: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise CompareInputError(f"--methods repeats a method: {text!r}")
    return names


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in (text or "").split(",") if s.strip()]
    except ValueError:
        raise CompareInputError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareInputError(f"--seeds needs at least one seed and no repeats, got {text!r}")
    return seeds


def method_overrides(method: str, seed: int) -> list[str]:
    base = ["distill.method=mgsr", *ABLATIONS[method]] if method in ABLATIONS else [f"distill.method={method}"]
    return [*base, f"distill.train.seed={seed}", f"scrg.seed={seed}"]


def check_references(cfg):
    """The preset's test prompts (id, instruction, input, reference), built in memory before any work;
    fails naming the field when no test prompt has a reference."""
    from components.data import build_prompts
    from components.data.schema import is_missing

    prompts = build_prompts(cfg.data.prompts, cfg.data.split)
    test = prompts[prompts["split"] == "test"].set_index("id")
    if test.empty:
        raise CompareInputError(f"data.split.test={cfg.data.split.test}: the test split is empty; compare scores the "
                                "distilled students on it")
    if all(is_missing(r) or str(r).strip() == "" for r in test["reference"]):
        column = getattr(cfg.data.prompts, "fields", {}).get("reference", "reference")
        raise CompareInputError(f"data.prompts: every test prompt's reference is empty (field 'reference', read from "
                                f"column {column!r}); compare scores students against references, so map the field to "
                                "the column holding them (data.prompts.fields.reference=...)")
    return test


@dataclass
class Comparison:
    rows: list[dict[str, Any]]
    best_baseline: str | None
    test_prompts: int
    scored_prompts: int
    seeds: list[int]
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per (method, seed)

    def frame(self):
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in r.items() if k != "per_prompt"} for r in self.rows])


def _echo(instruction: str, extra: str) -> str:
    return f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction


def summarise(per_method: dict[str, list], references: list[str], echo: list[str], teacher: list[str],
              healed: list[str], seeds: list[int], samples: int = 10000) -> tuple[list[dict[str, Any]], str | None]:
    """The table rows from each method's per-seed outputs (lists of answer lists, one per seed, aligned
    with `references`) and the reference rows' answers."""
    import numpy as np

    from components.distill.evaluate import distinct_n, paired_bootstrap, repetition_share, rouge_l

    def row(name: str, kind: str, outputs: list[list[str]]) -> dict[str, Any]:
        scores = np.array([rouge_l(o, references) for o in outputs]) * 100  # [seeds, prompts]
        per_seed = scores.mean(1)
        return {"method": name, "kind": kind, "seeds": len(outputs), "rougeL": float(per_seed.mean()),
                "rougeL_seed_std": float(per_seed.std(ddof=1)) if len(outputs) > 1 else 0.0,
                "repetition_share": float(np.mean([repetition_share(o) for o in outputs])),
                "distinct_2": float(np.mean([distinct_n(o) for o in outputs])), "per_prompt": scores.mean(0)}

    rows = [row(m, "baseline" if m in BASELINES else "ablation" if m in ABLATIONS else "method", outs)
            for m, outs in per_method.items()]
    healed_row = row("healed init", "reference", [healed])
    rows += [row("teacher", "reference", [teacher]), healed_row, row("instruction echo", "reference", [echo])]
    baselines = [r for r in rows if r["kind"] == "baseline"]
    best = max(baselines, key=lambda r: r["rougeL"]) if baselines else None

    def minus(r: dict[str, Any], other: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
        """r - other per prompt: mean and paired bootstrap 95 % CI (None without an other row)."""
        if other is None:
            return None, None, None
        return tuple(paired_bootstrap(list(r["per_prompt"]), list(other["per_prompt"]), samples, seed=seeds[0]))

    for r in rows:
        r.update(zip(("vs_best", "ci_low", "ci_high"), minus(r, best)))
        r.update(zip(("vs_init", "init_ci_low", "init_ci_high"), minus(r, healed_row)))
    return rows, best["method"] if best else None


def compare(config: str, overrides: list[str], methods: list[str], seeds: list[int],
            progress=None) -> Comparison:
    """Run every (method, seed) until distill_student and build the table (module docstring)."""
    import pandas as pd

    from components.data.schema import is_missing
    from flows.pipeline import pipeline
    from semflow.config import load_config
    from semflow.runtime import artifact_root
    from semflow.store import ArtifactStore, local_dir

    cfg = load_config(config, overrides)
    test = check_references(cfg)
    store = ArtifactStore(artifact_root(cfg.runtime))
    per_method: dict[str, list[list[str]]] = {}
    runs, frame = [], None
    for method in methods:
        per_method[method] = []
        for seed in seeds:
            if progress:
                progress(method, seed)
            result = pipeline(config, [*overrides, *method_overrides(method, seed)], until=["distill_student"])
            info = result["stages"]["distill_student"]
            manifest = store.manifest("distill_student", info["key"])
            samples = pd.read_parquet(local_dir(manifest) / manifest.output("eval").path)
            frame = samples if frame is None else frame
            if list(samples["id"]) != list(frame["id"]):
                raise RuntimeError(f"{method} seed {seed} answered other test prompts than the first run")
            per_method[method].append(samples["student_after"].fillna("").tolist())
            runs.append({"method": method, "seed": seed, "key": info["key"], "state": info["state"],
                         "mlflow_run_id": info["mlflow_run_id"],
                         **{k: info["metrics"].get(k) for k in ("rougeL_after", "rougeL_before", "train_seconds")}})
    # dataset references only: the stage scored a test prompt without one against the teacher's answer
    ids = frame["id"].tolist()
    keep = [i for i, pid in enumerate(ids) if not is_missing(test.at[pid, "reference"])
            and str(test.at[pid, "reference"]).strip()]
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    echo = [_echo(test.at[pid, "instruction"], test.at[pid, "input"]) for pid in ids]
    rows, best = summarise({m: [pick(o) for o in outs] for m, outs in per_method.items()},
                           pick([str(test.at[pid, "reference"]) for pid in ids]), pick(echo),
                           pick(frame["teacher"].fillna("").tolist()), pick(frame["student_before"].fillna("").tolist()),
                           seeds, cfg.distill.bootstrap_samples)
    return Comparison(rows=rows, best_baseline=best, test_prompts=len(test), scored_prompts=len(keep), seeds=seeds,
                      runs=runs)


def log_comparison(cfg, table: Comparison, config: str) -> str:
    """One MLflow run holding the table (JSON + Parquet), a bar chart with the CIs and per-row metrics;
    returns its id. A client bound to the store, not mlflow.set_tracking_uri, which would export
    MLFLOW_TRACKING_URI to everything that runs later in this process."""
    import tempfile
    import time
    from pathlib import Path

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from components.data import write_dataset
    from semflow.runtime import tracking_uri

    client = MlflowClient(tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.runtime.experiment)
    run = client.create_run(experiment_id, run_name=f"compare-{cfg.name}", tags={
        "semflow.kind": "compare", "semflow.config": config, "semflow.best_baseline": table.best_baseline or "",
        "semflow.methods": ",".join(r["method"] for r in table.rows if r["kind"] != "reference"),
        "semflow.seeds": ",".join(map(str, table.seeds))})
    frame = table.frame()
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(frame, Path(tmp) / "compare.parquet")
        (Path(tmp) / "compare.json").write_text(to_json(table))
        bar_chart(frame, table.best_baseline, Path(tmp) / "compare.png")
        for name in ("compare.parquet", "compare.json", "compare.png"):
            client.log_artifact(run.info.run_id, str(Path(tmp) / name))
    client.log_table(run.info.run_id, frame, artifact_file="compare_table.json")
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[
        Metric(f"{r['method'].replace(' ', '_')}.{k}", float(r[k]), now, 0)
        for r in table.rows for k in ("rougeL", "repetition_share", "vs_best", "ci_low", "ci_high", "vs_init",
                                      "init_ci_low", "init_ci_high") if r[k] is not None])
    client.log_batch(run.info.run_id, metrics=[Metric("test_prompts_scored", float(table.scored_prompts), now, 0)])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def to_json(table: Comparison) -> str:
    import json

    return json.dumps({"best_baseline": table.best_baseline, "test_prompts": table.test_prompts,
                       "scored_prompts": table.scored_prompts, "seeds": table.seeds,
                       "rows": table.frame().to_dict(orient="records"), "runs": table.runs}, indent=2)


def bar_chart(frame, best: str | None, path) -> None:
    """ROUGE-L x 100 per row; error bars: each row's 95 % CI against the best baseline, drawn around its score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(frame)), 4))
    colours = {"method": "tab:red", "ablation": "tab:orange", "baseline": "tab:blue", "reference": "tab:gray"}
    y = frame["rougeL"].to_numpy()
    if best is not None:
        low = (frame["vs_best"] - frame["ci_low"]).to_numpy(dtype=float)
        high = (frame["ci_high"] - frame["vs_best"]).to_numpy(dtype=float)
        err = np.vstack([low, high])
    else:
        err = None
    ax.bar(frame["method"], y, yerr=err, capsize=3, color=[colours[k] for k in frame["kind"]])
    ax.set_ylabel("ROUGE-L x 100 (test split)")
    ax.set_title(f"distillation methods; error bars: 95 % CI of the difference to {best}" if best else "distillation methods")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
