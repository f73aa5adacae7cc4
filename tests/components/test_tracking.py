"""tracking_store: MLflow's process-wide store is set while any user is inside and restored after the
last one leaves, so concurrent stages keep their store and later runs in the process are not redirected."""

from __future__ import annotations

import os
import threading

from semflow.tracking import tracking_store


def test_the_store_stays_while_any_user_is_inside_and_the_last_restores(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a, b = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    inside, leave, seen = threading.Event(), threading.Event(), {}

    def stage():  # a second stage of the same run, still logging when the first has finished
        with tracking_store(a):
            inside.set()
            leave.wait(5)
            seen["stage"] = os.environ.get("MLFLOW_TRACKING_URI")

    worker = threading.Thread(target=stage)
    with tracking_store(a):
        worker.start()
        inside.wait(5)
        with tracking_store(b):  # a user with another store
            assert os.environ["MLFLOW_TRACKING_URI"] == b
        assert os.environ["MLFLOW_TRACKING_URI"] == a  # put back for the users still inside
    assert os.environ["MLFLOW_TRACKING_URI"] == a  # the first user left; the stage is still inside
    leave.set()
    worker.join()
    assert seen["stage"] == a
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the last user restored the empty environment
