"""The command line as a user meets it: every bad input is one short message with exit code 2, a failure
during work exit code 1, no traceback, nothing partial left behind; and the commands people reach for
(`--version`, `runs`, `run --dry-run`, `gc`)."""

from __future__ import annotations

import re
import socket
import sys

import pytest

from semflow.store import ArtifactStore
from tests.conftest import SMOKE


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    """The entry point configures process-wide logging for a quiet run; undo it for the other tests."""
    import logging

    names = ("semflow", "tasks", "components", "flows", "mlflow", "prefect.flow_runs", "prefect.task_runs")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "0")
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """`semflow ARGS` through the real entry point (its error handling included): exit code, all output."""
    from semflow.cli import main

    monkeypatch.setattr(sys, "argv", ["semflow", *args])
    monkeypatch.setenv("SEMFLOW_DEBUG", "0")  # main() sets these for the process; monkeypatch restores them
    monkeypatch.setenv("SEMFLOW_LOG_LEVEL", "warning")
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write(path, content: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# (name, files to write under IN/, overrides, message regex); every case fails in data prep or before it
RUN_CASES = [
    ("malformed-jsonl", {"p.jsonl": '{"instruction": "a"}\n{"instruction": "b"}\n{"instruction": oops}\n'},
     ["data.prompts={kind: file, path: 'IN/p.jsonl'}"], r"p\.jsonl:3: invalid JSON"),
    ("missing-field", {"p.jsonl": '{"question": "q"}\n'}, ["data.prompts={kind: file, path: 'IN/p.jsonl'}"],
     r"p\.jsonl:1: missing required field 'instruction'"),
    ("empty-file", {"p.jsonl": ""}, ["data.prompts={kind: file, path: 'IN/p.jsonl'}"], r"p\.jsonl has no records"),
    ("wrong-csv-columns", {"p.csv": "question,answer\nwhy,because\n"}, ["data.prompts={kind: file, path: 'IN/p.csv'}"],
     r"p\.csv.*instruction"),
    ("missing-path", {}, ["data.prompts={kind: file, path: /no/such/prompts.jsonl}"], r"/no/such/prompts\.jsonl"),
    ("directory-as-file", {"d/x.txt": "x"}, ["data.prompts={kind: file, path: 'IN/d'}"], r"d.*(directory|not a file)"),
    ("duplicate-doc-ids", {"docs.jsonl": '{"doc_id": "a", "text": "x y"}\n{"doc_id": "a", "text": "z w"}\n'},
     ["data.documents={kind: file, path: 'IN/docs.jsonl'}"], r"duplicate doc_id 'a'"),
    ("not-utf8", {"p.jsonl": b'{"instruction": "caf\xe9"}\n'}, ["data.prompts={kind: file, path: 'IN/p.jsonl'}"],
     r"p\.jsonl.*(UTF-8|utf-8)"),
    ("corpus-without-tokens", {"c.jsonl": '{"text": "!!! ???"}\n{"text": "..."}\n'},
     ["data.corpora=[{name: punct, source: {kind: file, path: 'IN/c.jsonl'}}]"],
     r"data\.corpora\[punct\]: no usable tokens"),
    ("keep-layers-out-of-range", {}, ["student.keep_layers=[0, 5]"],
     r"student\.keep_layers: \[5\] out of range: the teacher 'tiny-random' has 2 layers"),
]


@pytest.mark.parametrize("name, files, overrides, message", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_input_to_run_is_one_short_message_and_leaves_nothing(capsys, monkeypatch, workdir, tmp_path, name,
                                                                  files, overrides, message):
    for rel, content in files.items():
        write(tmp_path / "in" / rel, content)
    args = ["run", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"]
    for item in overrides:  # IN/ names a file written above
        args += ["--set", item.replace("IN/", f"{tmp_path / 'in'}/")]
    code, out = cli(capsys, monkeypatch, *args)
    assert code == 2, out
    assert re.search(message, out), out
    assert "Traceback" not in out and len(out.strip().splitlines()) <= 5, out
    store = ArtifactStore(workdir / "artifacts")
    assert store.stage_dirs("prepare_data") == [] and store.stage_dirs("generate_teacher") == []
    assert not [p for p in (workdir / "artifacts").rglob("*") if p.is_file()], "something partial was left"


CONFIG_CASES = [
    ("missing-file", ["run", "-c", "/no/such.yaml"], r"config file not found: /no/such\.yaml"),
    ("directory", ["run", "-c", "{tmp}"], r"is a directory, not a config file"),
    ("empty-file", ["run", "-c", "{tmp}/empty.yaml"], r"the config file is empty"),
    ("unknown-key", ["config", "-c", str(SMOKE), "--set", "generation.beams=2"], r"generation\.beams: unknown key"),
    ("bad-yaml-value", ["config", "-c", str(SMOKE), "--set", "generation.max_new_tokens=[1,"],
     r"--set generation\.max_new_tokens: value '\[1,' is not valid YAML"),
    ("unknown-stage", ["run", "-c", str(SMOKE), "--until", "nope"], r"unknown stage 'nope'"),
    ("disabled-stage", ["run", "-c", str(SMOKE), "--set", "sedsi.enabled=false", "--only", "sedsi_index"],
     r"stage 'sedsi_index' does not run with this config"),
    ("usage", ["run", "--no-such-option"], r"No such option"),
]


@pytest.mark.parametrize("name, args, message", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_and_usage_are_exit_2_before_any_work(capsys, monkeypatch, tmp_path, name, args, message):
    (tmp_path / "empty.yaml").write_text("")
    code, out = cli(capsys, monkeypatch, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2 and re.search(message, out), out
    assert "Traceback" not in out


def test_version_and_log_level(capsys, monkeypatch):
    from importlib.metadata import version

    code, out = cli(capsys, monkeypatch, "--version")
    assert code == 0 and out.strip() == f"semflow {version('semflow')}"
    code, out = cli(capsys, monkeypatch, "--log-level", "loud", "stages", "-c", str(SMOKE))
    assert code == 2 and "expected one of warning, info, debug" in out


def test_a_failure_during_work_is_exit_1_with_the_stage_named(capsys, monkeypatch, workdir):
    import components.generation.batched as batched

    def broken(*args, **kwargs):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(batched, "generate", broken)
    code, out = cli(capsys, monkeypatch, "run", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}")
    assert code == 1 and "error: generate_teacher: the GPU caught fire" in out and "semflow resume" in out, out
    assert "Traceback" not in out and len(out.strip().splitlines()) <= 5, out
    code, out = cli(capsys, monkeypatch, "--debug", "run", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}")
    assert code == 1 and "Traceback" in out  # --debug shows it


def test_dry_run_runs_and_gc_on_a_finished_run(capsys, monkeypatch, workdir):
    base = ["-c", str(SMOKE), "--set", f"runtime.workdir={workdir}"]
    code, out = cli(capsys, monkeypatch, "run", *base, "--dry-run")
    assert code == 0 and out.count("to run") == 8 and "cached" not in out, out
    assert not (workdir / "artifacts").exists()  # a dry run computes nothing
    code, out = cli(capsys, monkeypatch, "run", *base)
    assert code == 0 and "Completed" in out and "rougeL_after" in out  # headline metrics in the stage table
    assert "Starting temporary server" not in out and "Finished in state" not in out  # Prefect's noise is off
    code, out = cli(capsys, monkeypatch, "run", *base, "--dry-run")
    assert code == 0 and out.count("cached") == 8, out

    code, out = cli(capsys, monkeypatch, "runs", *base)
    assert code == 0 and "FINISHED" in out and "8 Completed" in out, out
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    [parent] = [r for r in client.search_runs([client.get_experiment_by_name("semflow").experiment_id])
                if "mlflow.parentRunId" not in r.data.tags]
    code, out = cli(capsys, monkeypatch, "runs", "show", parent.info.run_id, *base)
    assert code == 0 and "distill_student: Completed" in out and "train_steps" in out, out
    code, out = cli(capsys, monkeypatch, "runs", "show", "0" * 32, *base)
    assert code == 2 and "no pipeline run" in out

    # an artifact no finished run references (left by a changed setting whose run then failed) goes
    store = ArtifactStore(workdir / "artifacts")
    orphan = store.path("cade_align", "f" * 20)
    orphan.mkdir(parents=True)
    (orphan / "manifest.json").write_text(store.manifest("cade_align", store.keys("cade_align")[0]).model_dump_json())
    leftover = store.path("cade_align", ".x.tmp-123")
    leftover.mkdir()
    code, out = cli(capsys, monkeypatch, "gc", *base, "--dry-run")
    assert code == 0 and "would delete" in out and orphan.exists() and leftover.exists(), out
    code, out = cli(capsys, monkeypatch, "gc", *base)
    assert code == 0 and not orphan.exists() and not leftover.exists(), out
    code, out = cli(capsys, monkeypatch, "run", *base, "--dry-run")
    assert out.count("cached") == 8  # what the finished run uses was kept


def test_ui_fails_fast_on_a_taken_port_and_resume_names_what_it_cannot_find(capsys, monkeypatch, workdir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = cli(capsys, monkeypatch, "ui", "-c", str(SMOKE), "--set", f"runtime.workdir={workdir}",
                        "--mlflow-port", str(port))
    assert code == 1 and f"--mlflow-port {port}: the port is taken" in out, out
    code, out = cli(capsys, monkeypatch, "resume", "00000000-0000-0000-0000-000000000000", "-c", str(SMOKE),
                    "--set", f"runtime.workdir={workdir}")
    assert code == 1 and "no flow run 00000000-0000-0000-0000-000000000000 in" in out and ": None" not in out, out
    assert "http://127.0.0.1" not in out
