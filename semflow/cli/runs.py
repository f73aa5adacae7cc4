"""Past runs and their artifacts: `runs` (list), `runs show`, `gc` (delete what no finished run uses)."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from semflow.cli.common import DEFAULT_CONFIG, ConfigOpt, SetOpt, app, console, fail, load
from semflow.config import PipelineConfig
from semflow.dag import STAGES, headline
from semflow.runtime import artifact_root, tracking_uri
from semflow.store import MANIFEST, ArtifactStore, StageManifest

runs_app = typer.Typer(help="Past pipeline runs: state, stages and headline metrics (`runs show ID` for all).")
app.add_typer(runs_app, name="runs")


def _parents(cfg: PipelineConfig, limit: int | None = None):
    """The MLflow parent runs of pipeline runs, newest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment)
    if experiment is None:
        return client, []
    runs = client.search_runs([experiment.experiment_id], "tags.`semflow.preset` != ''",
                              order_by=["attributes.start_time DESC"], max_results=limit or 1000)
    return client, [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def _stage_manifest(tags: dict[str, str], stage: str) -> StageManifest | None:
    uri = tags.get(f"semflow.{stage}.artifact")
    if not uri:
        return None
    from semflow.store import store_of

    probe = StageManifest(stage=stage, key=Path(uri).name, uri=uri, digest="")
    try:
        return store_of(probe).manifest(stage, probe.key)
    except (OSError, ValueError):
        return None


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M") if ms else "-"


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="newest runs to list")] = 20,
) -> None:
    """The newest pipeline runs with their state, stage states and headline metrics."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = load(config, overrides)
    _, parents = _parents(cfg, limit)
    if not parents:
        console.print(f"no pipeline run in MLflow experiment {cfg.runtime.experiment!r} yet")
        return
    table = Table(title=f"pipeline runs ({cfg.runtime.experiment})")
    for column in ("started (UTC)", "run id", "preset", "status", "stages", "headline metrics"):
        table.add_column(column, overflow="fold")
    for run in parents:
        tags = run.data.tags
        states = [tags.get(f"semflow.{s.name}.state") for s in STAGES if f"semflow.{s.name}.state" in tags]
        counts = {state: states.count(state) for state in dict.fromkeys(states)}
        metrics = {}
        for stage in ("distill_student", "sedsi_index"):
            manifest = _stage_manifest(tags, stage)
            if manifest is not None:
                metrics.update(headline(stage, manifest.metrics, most=2))
        table.add_row(_when(run.info.start_time), run.info.run_id, tags.get("semflow.preset", "?"), run.info.status,
                      ", ".join(f"{n} {s}" for s, n in counts.items()) or "-",
                      ", ".join(f"{k}={v:.3g}" for k, v in metrics.items()))
    console.print(table)


@runs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a pipeline run (see `semflow runs`)")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Every stage of one run: state, cache key, MLflow stage run, and all its metrics."""
    cfg = load(config, overrides)
    client, parents = _parents(cfg)
    match = [r for r in parents if r.info.run_id == run_id]
    if not match:
        raise fail(f"no pipeline run {run_id!r} in MLflow experiment {cfg.runtime.experiment!r} at "
                   f"{tracking_uri(cfg.runtime)} (`semflow runs` lists them)")
    tags = match[0].data.tags
    console.print(f"run {run_id}: {match[0].info.status}, started {_when(match[0].info.start_time)} UTC, "
                  f"preset {tags.get('semflow.preset')} ({tags.get('semflow.config')})")
    for stage in STAGES:
        state = tags.get(f"semflow.{stage.name}.state")
        if state is None:
            continue
        manifest = _stage_manifest(tags, stage.name)
        table = Table(title=f"{stage.name}: {state}" + (f", key {manifest.key}" if manifest else ""),
                      title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in sorted((manifest.metrics if manifest else {}).items()):
            table.add_row(name, f"{value:.6g}")
        console.print(table)
        if manifest:
            console.print(f"  artifact {manifest.uri}  (MLflow stage run {manifest.mlflow_run_id})")


# ---------------------------------------------------------------------------------------------- gc
@app.command()
def gc(
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be deleted; delete nothing")] = False,
    checkpoints: Annotated[bool, typer.Option(help="also delete training checkpoints of unfinished stages "
                                              "(they are what `semflow resume` continues from)")] = False,
    everything: Annotated[bool, typer.Option("--all", help="also delete artifacts that finished runs use")] = False,
) -> None:
    """Delete artifacts no finished pipeline run references, leftovers of interrupted writes, and stale
    lock files. Artifacts that a FINISHED run's stages produced or read from the cache are kept unless
    --all; `index add` artifacts are kept unless --all; training checkpoints unless --checkpoints."""
    cfg = load(config, overrides)
    store = ArtifactStore(artifact_root(cfg.runtime))
    if store.remote:
        raise fail(f"{store.root}: gc works on a local artifact root only")
    _, parents = _parents(cfg)
    kept = {tags[f"semflow.{s.name}.artifact"] for r in parents if r.info.status == "FINISHED"
            for tags in [r.data.tags] for s in STAGES if tags.get(f"semflow.{s.name}.artifact")}
    doomed: list[tuple[Path, str]] = []
    root = Path(store.root)
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != ".locks") if root.is_dir() else []:
        for entry in sorted(stage_dir.iterdir()):
            name = entry.name
            if ".tmp-" in name or ".get-" in name:
                doomed.append((entry, "an interrupted write"))
            elif name.endswith(".work"):
                if checkpoints or everything:
                    doomed.append((entry, "training checkpoints"))
            elif (entry / MANIFEST).is_file():
                if everything or (str(entry) not in kept and stage_dir.name != "sedsi_index_add"):
                    doomed.append((entry, "used by no finished run" if not everything else "--all"))
            elif entry.is_dir():
                doomed.append((entry, "no manifest (incomplete)"))
    doomed += [(lock, "stale lock file") for lock in _stale_locks(root / ".locks", delete=not dry_run)]
    if not doomed:
        console.print(f"nothing to delete under {root}")
        return
    table = Table(title=("would delete" if dry_run else "deleted") + f" under {root}")
    table.add_column("path", overflow="fold")
    table.add_column("why")
    table.add_column("MB", justify="right")
    total = 0.0
    for path, why in doomed:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6 if path.is_dir() else 0.0
        total += size
        table.add_row(str(path.relative_to(root)), why, f"{size:.1f}")
        if not dry_run and path.is_dir():
            shutil.rmtree(path)
    console.print(table)
    console.print(f"{len(doomed)} entries, {total:.1f} MB" + (" (dry run: nothing deleted)" if dry_run else ""))


def _stale_locks(locks: Path, delete: bool) -> list[Path]:
    """Lock files no live process holds (runs delete theirs on release; a killed run leaves one), deleted
    while held, as semflow.store does, so a run that locks at the same moment is never fooled."""
    from filelock import FileLock, Timeout

    stale = []
    for file in sorted(locks.rglob("*.lock")) if locks.is_dir() else []:
        lock = FileLock(file)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            continue  # held: a run is computing that artifact now
        try:
            if delete:
                file.unlink(missing_ok=True)
        finally:
            lock.release()
        stale.append(file)
    return stale
