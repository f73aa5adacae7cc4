"""The selection split of bench/bench_distill_student.py: levers are chosen inside the train split."""

import importlib.util

import pandas as pd

from semflow.caching import REPO_ROOT

spec = importlib.util.spec_from_file_location("bench_distill_student", REPO_ROOT / "bench" / "bench_distill_student.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _responses():
    splits = ["train"] * 70 + ["val"] * 10 + ["test"] * 20
    return pd.DataFrame({"id": [f"p{i}" for i in range(100)], "split": splits, "response": ["x"] * 100})


def test_selection_split_never_holds_a_test_row_and_takes_about_its_share_of_train():
    responses = _responses()
    inner = bench.inner_split(responses, 0.3, seed=0)
    outer_test = set(responses.loc[responses["split"] == "test", "id"])
    assert outer_test.isdisjoint(inner["id"])
    outer_train = set(responses.loc[responses["split"] == "train", "id"])
    assert set(inner.loc[inner["split"] == "test", "id"]) <= outer_train
    assert set(inner.loc[inner["split"] == "val", "id"]) == set(responses.loc[responses["split"] == "val", "id"])
    assert 10 <= (inner["split"] == "test").sum() <= 32   # 30 % of 70 is 21; the hash is not exact


def test_selection_split_follows_its_seed():
    responses = _responses()
    a = bench.inner_split(responses, 0.3, seed=0)
    assert a.equals(bench.inner_split(responses, 0.3, seed=0))
    assert not a["split"].equals(bench.inner_split(responses, 0.3, seed=1)["split"])


def test_selection_share_outside_the_unit_interval_is_refused():
    import pytest

    with pytest.raises(ValueError, match="--select-share"):
        bench.inner_split(_responses(), 1.0, seed=0)
