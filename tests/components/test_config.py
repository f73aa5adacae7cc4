from pathlib import Path

import pytest

from semflow.config import ConfigError, PipelineConfig, load_config, validate_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE = CONFIGS / "smoke.yaml"


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_preset_validates(preset):
    cfg = load_config(CONFIGS / preset)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.name == preset.removesuffix(".yaml")


def test_default_preset_is_the_real_offline_teacher():
    cfg = load_config(CONFIGS / "default.yaml")
    assert cfg.teacher.spec == "smollm2-135m-instruct"
    assert cfg.runtime.offline is True
    assert cfg.teacher.trust_remote_code is False


def test_override_parses_yaml_values():
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        ["generation.max_new_tokens=64", "generation.do_sample=true", "student.keep_layers=[0, 1]"],
    )
    assert cfg.generation.max_new_tokens == 64
    assert cfg.generation.do_sample is True
    assert cfg.student.keep_layers == [0, 1]


def test_override_of_a_missing_section_is_validated_too():
    with pytest.raises(ConfigError, match=r"nonsense: unknown key"):
        load_config(CONFIGS / "smoke.yaml", ["nonsense.deep=1"])


def test_unknown_key_is_reported_with_its_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generation:\n  max_new_tokenz: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml") as err:
        load_config(bad)
    assert "generation.max_new_tokenz: unknown key" in str(err.value)


def test_bad_value_is_reported_with_its_path():
    with pytest.raises(ConfigError, match=r"generation\.max_new_tokens: Input should be greater than 0"):
        validate_config({"generation": {"max_new_tokens": 0}})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match=r"data\.split: .*must be 1, got 0.7"):
        validate_config({"data": {"split": {"train": 0.5}}})


def test_source_kind_selects_the_schema():
    with pytest.raises(ConfigError, match=r"data\.prompts\.file\.path: Field required"):
        validate_config({"data": {"prompts": {"kind": "file"}}})


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(CONFIGS / "smoke.yaml", ["generation.max_new_tokens"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(CONFIGS / "smoke.yaml", ["name.x=1"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_student_spec_requires_a_model():
    with pytest.raises(ConfigError, match="student.init is 'spec' but student.model is not set"):
        validate_config({"student": {"init": "spec"}})


def test_credentials_stay_out_of_presets_and_printed_uris():
    from semflow.runtime import redact

    with pytest.raises(ConfigError, match="runtime.mlflow_tracking_uri holds a password"):
        load_config(SMOKE, ["runtime.mlflow_tracking_uri=postgresql://bob:hunter2@db/mlflow"])
    with pytest.raises(ConfigError, match="runtime.artifact_root holds a password"):
        load_config(SMOKE, ["runtime.artifact_root=s3://key:secret@bucket/x"])
    assert load_config(SMOKE, ["runtime.mlflow_tracking_uri=http://bob@host:5000"]).runtime.mlflow_tracking_uri
    assert redact("postgresql://bob:hunter2@db:5432/mlflow") == "postgresql://bob:***@db:5432/mlflow"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_execution_section_and_url_artifact_roots():
    from semflow.runtime import artifact_root

    cfg = load_config(SMOKE, ["execution.gpu_stages=pool", "execution.pool_stages=[distill_student]"])
    assert cfg.execution.gpu_stages == "pool" and cfg.execution.pool_stages == ["distill_student"]
    with pytest.raises(ConfigError, match="execution.pool_stages.0"):
        load_config(SMOKE, ["execution.pool_stages=[cade_align]"])
    with pytest.raises(ConfigError, match="execution.gpu_stages"):
        load_config(SMOKE, ["execution.gpu_stages=cluster"])
    remote = load_config(SMOKE, ["runtime.artifact_root=s3://bucket/semflow/"])
    assert artifact_root(remote.runtime) == "s3://bucket/semflow"
    local = load_config(SMOKE, ["runtime.artifact_root=file:///tmp/x/../y"])
    assert artifact_root(local.runtime) == "/tmp/y"


def test_the_split_half_measure_needs_replicates():
    with pytest.raises(ConfigError, match=r"cade: .*split_half needs split-half replicates"):
        validate_config({"cade": {"shift_measure": "split_half"}})
    assert validate_config({"cade": {"shift_measure": "split_half", "replicates": 4}}).cade.replicates == 4
