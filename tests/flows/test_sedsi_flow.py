"""The describe_documents and sedsi_index stages on the smoke preset: artifacts, the metrics table (SE-DSI,
BM25 and the hybrid per named query set), MLflow, labelled queries and their bad input, `semflow search`
and its input checks, `semflow index add`, and resuming an interrupted training."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from components.data import DataError
from components.sedsi import SedsiIndex
from flows.pipeline import pipeline
from semflow.cli import app
from semflow.store import ArtifactStore
from tests.conftest import SMOKE, crash_after_checkpoint

runner = CliRunner()
METRICS = ["hits@1", "hits@10", "mrr@3", "mrr@10", "mrr@20"]
SYSTEMS = ["sedsi", "bm25", "hybrid"]


def flat(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines at the terminal width


def run(workdir, *overrides):
    return pipeline(str(SMOKE), [f"runtime.workdir={workdir}", *overrides])


def _doc_ids(result) -> list[str]:
    return pd.read_parquet(f"{result['stages']['prepare_data']['uri']}/documents.parquet")["doc_id"].tolist()


def test_index_stage_outputs_metrics_beside_bm25_and_tracking(workdir):
    result = run(workdir)
    info = result["stages"]["sedsi_index"]
    table = pd.read_parquet(f"{info['uri']}/metrics.parquet")
    # no labelled queries: the titles (never trained on) lead, the held-out pseudo-queries are named as such
    assert list(table["queries"]) == ["titles"] * 3 + ["pseudo"] * 3 and list(table["system"]) == SYSTEMS * 2
    assert set(METRICS) <= set(table.columns) and (table["n_queries"] == 8).all()  # 8 titles; 8 docs x 1 held out
    assert (table["depth"] == 4).all()  # every system cut at the beam width of the smoke preset
    for metric in METRICS:
        assert table[metric].between(0, 1).all()
    assert (table["mrr@10"] <= table["hits@10"]).all() and (table["hits@1"] <= table["mrr@3"] + 1e-9).all()
    assert (table["mrr@3"] <= table["mrr@10"] + 1e-9).all() and (table["mrr@10"] <= table["mrr@20"] + 1e-9).all()

    described = result["stages"]["describe_documents"]
    descriptions = pd.read_parquet(f"{described['uri']}/descriptions.parquet")
    assert list(descriptions["doc_id"]) == _doc_ids(result)
    for row in descriptions.itertuples():
        assert row.ed == row.candidates[0] and row.ed not in set(row.heldout_queries) | set(row.train_queries)
    assert 0 <= described["metrics"]["ed.generic_share"] <= 1 and described["metrics"]["documents"] == 8
    index = SedsiIndex.load(f"{info['uri']}/index")
    assert sorted(index.doc_ids) == sorted(_doc_ids(result))
    assert all(index.trie.contains(index.encoder.ed_ids(ed)) for ed in index.eds.values())

    m = info["metrics"]
    assert m["documents"] == 8 and 0 <= m["ed.collision_rate"] <= 1
    # the paper's mix: documents and rehearsal contents; no pseudo-query inputs, no labelled queries here
    assert m["pairs.document"] == 8 and m["pairs.sentence"] > 0 and m["pairs.query"] == 0 and m["train.steps"] == 3
    assert m["titles.queries"] == 8 and m["pseudo.queries"] == 8
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    child = client.get_run(info["mlflow_run_id"])
    assert child.data.tags["mlflow.parentRunId"] == result["mlflow_run_id"]
    assert {"titles.sedsi.hits_at_1", "titles.hybrid.mrr_at_20", "pseudo.sedsi.hits_at_10", "pseudo.bm25.mrr_at_3",
            "ed.collision_rate", "ed.generic_share", "rc.passages_per_doc"} <= set(child.data.metrics)
    assert not [k for k in child.data.metrics if "mrr_at_100" in k]  # no cut-off beyond the depth both reach
    assert child.data.tags["semflow.sedsi.headline_queries"] == "titles"
    assert [x.step for x in client.get_metric_history(child.info.run_id, "train/loss")] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "sedsi")}
    assert artifacts == {"sedsi/metrics.json", "sedsi/samples.json"}
    assert {"index/index.json", "index/trie.safetensors", "index/model"} <= {a.path for a in client.list_artifacts(child.info.run_id, "index")}
    versions = client.search_model_versions("name='semflow-index'")
    assert [v.run_id for v in versions] == [child.info.run_id]


def test_search_and_index_add_from_the_command_line(workdir, tmp_path):
    result = run(workdir)
    args = ["--config", str(SMOKE), "--set", f"runtime.workdir={workdir}"]
    found = runner.invoke(app, ["search", "the history of a country", "--k", "3", *args])
    assert found.exit_code == 0, found.output
    ids = _doc_ids(result)
    assert sum(doc_id in found.output for doc_id in ids) >= 1 and "8 documents" in flat(found.output)

    new = tmp_path / "new.jsonl"
    new.write_text("\n".join(json.dumps(d) for d in [
        {"doc_id": "n1", "title": "Telescope", "text": "A telescope gathers light. Galileo improved it in 1609."},
        {"doc_id": "n2", "title": "Honey", "text": "Bees make honey from nectar. Honey keeps for years."},
    ]) + "\n")
    added = runner.invoke(app, ["index", "add", str(new), *args])
    assert added.exit_code == 0, added.output
    assert "old documents, before" in flat(added.output) and "new documents, after" in flat(added.output)
    store = ArtifactStore(workdir / "artifacts")
    [grown] = [store.manifest("sedsi_index_add", d.name) for d in store.stage_dirs("sedsi_index_add")]
    m = grown.metrics
    assert m["documents_added"] == 2 and m["pairs_replayed"] == m["pairs_new"] > 0
    assert m["old_before.queries"] == m["old_after.queries"] == 8 and m["new_after.queries"] == 2
    assert m["forgetting.hits_at_10"] == pytest.approx(m["old_before.hits_at_10"] - m["old_after.hits_at_10"])
    index = SedsiIndex.load(f"{grown.uri}/index")
    assert {"n1", "n2"} <= set(index.doc_ids) and len(index.doc_ids) == 10 and len(index.lineage) == 2
    # The parent index is unchanged; search now uses the newest one.
    assert len(SedsiIndex.load(f"{result['stages']['sedsi_index']['uri']}/index").doc_ids) == 8
    assert "10 documents" in flat(runner.invoke(app, ["search", "honey", *args]).output)

    again = runner.invoke(app, ["index", "add", str(new), *args])  # n1, n2 are in the newest index now
    assert again.exit_code == 2 and "already in the index" in flat(again.output)
    missing = runner.invoke(app, ["index", "add", str(tmp_path / "nope.jsonl"), *args])
    assert missing.exit_code == 2 and "no such file" in flat(missing.output)
    (tmp_path / "empty.jsonl").write_text("\n")
    empty = runner.invoke(app, ["index", "add", str(tmp_path / "empty.jsonl"), *args])
    assert empty.exit_code == 2 and "empty" in flat(empty.output) and len(empty.output.strip().splitlines()) == 1

    # bad search input: one line, exit 2, nothing searched
    for bad, message in ((["", "--k", "3"], "query is empty"), (["   "], "query is empty"),
                         (["honey", "--k", "0"], "--k 0"), (["honey", "--k", "-3"], "--k -3"),
                         (["honey", "--beams", "0"], "--beams 0")):
        out = runner.invoke(app, ["search", *bad, *args])
        assert out.exit_code == 2, (bad, out.output)
        assert message in flat(out.output) and len(out.output.strip().splitlines()) == 1, out.output
        assert "index sedsi_index" not in out.output  # nothing was loaded or searched
    # a query longer than sedsi.max_input_tokens (64 in the smoke preset) is searched, and says it was cut
    long = runner.invoke(app, ["search", "honey " * 40, *args])
    assert long.exit_code == 0 and "only the first 64 were searched" in flat(long.output)
    short = runner.invoke(app, ["search", "honey", *args])
    assert short.exit_code == 0 and "were searched" not in short.output


def _labelled(tmp_path, doc_ids, extra_qrels=()):
    queries = tmp_path / "queries.jsonl"
    qrels = tmp_path / "qrels.jsonl"
    queries.write_text("".join(json.dumps({"qid": f"q{i}", "query": f"about document {d}"}) + "\n"
                               for i, d in enumerate(doc_ids)))
    rows = [{"qid": f"q{i}", "doc_id": d, "relevance": 1} for i, d in enumerate(doc_ids)] + list(extra_qrels)
    qrels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return queries, qrels


def test_labelled_queries_are_evaluated_and_unknown_documents_fail_or_are_counted(workdir, tmp_path):
    first = run(workdir, "sedsi.enabled=false")
    ids = _doc_ids(first)[:3]
    queries, qrels = _labelled(tmp_path, ids, [{"qid": "q0", "doc_id": "no-such-doc", "relevance": 1}])
    setting = f"sedsi.queries={{queries: '{queries}', qrels: '{qrels}'}}"
    with pytest.raises(DataError, match=r"qrels\.jsonl:4.*no-such-doc"):
        run(workdir, setting)
    store = ArtifactStore(workdir / "artifacts")
    assert store.stage_dirs("sedsi_index") == []  # nothing partial left behind

    result = run(workdir, setting.replace("}", ", on_unknown_doc: skip}"))
    table = pd.read_parquet(f"{result['stages']['sedsi_index']['uri']}/metrics.parquet")
    labelled = table[table["queries"] == "labelled"]
    assert list(labelled["system"]) == SYSTEMS and (labelled["n_queries"] == 3).all()
    assert list(table["queries"].drop_duplicates()) == ["labelled", "pseudo"]  # labelled first; no title set
    m = result["stages"]["sedsi_index"]["metrics"]
    assert m["queries_skipped.qrels_unknown_doc"] == 1 and m["queries.train"] == 0 and m["pairs.query"] == 0

    # the training share trains Query -> ED pairs (the paper's labelled-query pairs) and leaves the index
    trained = run(workdir, setting.replace("}", ", on_unknown_doc: skip, train_share: 0.4}"))
    m = trained["stages"]["sedsi_index"]["metrics"]
    assert m["queries.train"] == 1 and m["labelled.queries"] == 2 and m["pairs.query"] == 1
    # the DSI-QG recipe adds the training pseudo-queries (candidates other than the ED and the held-out ones)
    dsi_qg = run(workdir, "sedsi.pairs=dsi_qg")
    descriptions = pd.read_parquet(f"{dsi_qg['stages']['describe_documents']['uri']}/descriptions.parquet")
    expected = sum(len(q) for q in descriptions["train_queries"])
    assert expected > 0 and dsi_qg["stages"]["sedsi_index"]["metrics"]["pairs.query"] == expected


def test_an_interrupted_index_training_resumes_from_its_checkpoint(workdir, monkeypatch):
    crash_after_checkpoint(monkeypatch, "sedsi_index")
    with pytest.raises(RuntimeError, match="injected crash after sedsi_index checkpoint 2"):
        run(workdir)
    monkeypatch.undo()
    resumed = run(workdir)
    states = {k: v["state"] for k, v in resumed["stages"].items()}
    assert states["sedsi_index"] == "Completed" and states["distill_student"] == "Cached"
    assert resumed["stages"]["sedsi_index"]["metrics"]["train.resumed_from_step"] == 2
