"""The trainer resumes after SIGKILL from its last checkpoint and ends with the weights of an
uninterrupted run; loss goes down on a tiny problem."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components.distill import Objective, build_examples, collate, student_loss_fn
from components.training import Trainer
from components.distill.data import DistillDataError
from components.models.tiny import build_tiny_model
from semflow.config import DistillConfig, TinyModelConfig, TrainerConfig

SCRIPT = Path(__file__).with_name("_train_tiny.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    straight = _run([tmp_path / "a" / "ckpt", tmp_path / "a" / "out"])
    killed = _run([tmp_path / "b" / "ckpt", tmp_path / "b" / "out", 5])
    deadline = time.time() + 240
    while not (tmp_path / "b" / "hanging").exists():
        assert killed.poll() is None, killed.stdout.read()
        assert time.time() < deadline, "the training process never reached step 5"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert sorted(p.name for p in (tmp_path / "b" / "ckpt").glob("step-*")) == ["step-000002", "step-000004"]
    resumed = _run([tmp_path / "b" / "ckpt", tmp_path / "b" / "out"])
    log_resumed, _ = resumed.communicate(timeout=240)
    log_straight, _ = straight.communicate(timeout=240)
    assert resumed.returncode == 0 and straight.returncode == 0, log_resumed + log_straight
    assert "resumed_from 4" in log_resumed and "resumed_from 0" in log_straight
    assert "step 5 " in log_resumed and "step 4 " not in log_resumed
    for name in ("student.safetensors", "objective.safetensors"):
        a, b = load_file(tmp_path / "a" / "out" / name), load_file(tmp_path / "b" / "out" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"


@pytest.mark.parametrize("method", ["mgsr", "seqkd", "kd_fkl"])
def test_training_lowers_the_loss_on_a_tiny_problem(tmp_path, method):
    torch.manual_seed(0)
    teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
    student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    cfg = DistillConfig(method=method, top_k=16, chunk_size=16,
                        train=TrainerConfig(batch_size=4, max_steps=30, lr=3e-3, warmup_ratio=0.0,
                                            checkpoint_every=100, scheduler="constant_with_warmup"))
    examples, _ = build_examples(tok, [tok("q")["input_ids"]] * 4, [tok("abcabc")["input_ids"] + [2]] * 4, cfg)
    objective = Objective(cfg)
    trainer = Trainer(student, student_loss_fn(student, teacher, objective, cfg.chunk_size), examples,
                      lambda ex: collate(ex, tok.pad_token_id), cfg.train, tmp_path,
                      extra_modules={"objective": objective}, progress=False,
                      param_groups=[{"params": list(objective.parameters()), "lr": cfg.band_lr}])
    history = trainer.train().history
    student_loss = [h["loss"] - h.get("loss_band", 0.0) for h in history]  # the band's penalty is f_sub's alone
    assert student_loss[-1] < 0.5 * student_loss[0]
    if method == "mgsr":
        assert all(0 < h["band_lower"] < h["band_upper"] < 1 for h in history)


def test_empty_training_split_is_a_clear_error():
    _, tok = build_tiny_model(TinyModelConfig())
    with pytest.raises(DistillDataError, match="training split is empty"):
        build_examples(tok, [], [], DistillConfig())


def test_micro_batches_are_a_function_of_the_step(tmp_path):
    student, tok = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    examples = list(range(10))
    trainer = Trainer(student, lambda b: None, examples, lambda ex: {}, TrainerConfig(batch_size=3, grad_accum=2),
                      tmp_path, progress=False)
    assert trainer.steps_per_epoch == 2 and trainer.total_steps == 6
    seen = [x for step in range(2) for micro in trainer.micro_batches(step) for x in micro]
    assert sorted(seen) == examples  # one epoch covers every example once
    assert trainer.micro_batches(3) == trainer.micro_batches(3)


def test_gkd_hook_resamples_on_policy_share_reproducibly():
    from components.distill.data import Example
    from components.distill.recipe import _gkd_hook

    student, tok = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    examples = [Example(tok("q1")["input_ids"], [5, 6, 7], [False] * 3), Example(tok("q22")["input_ids"], [8], [False])]
    always = _gkd_hook(student, tok, DistillConfig(method="gkd", gkd_on_policy=1.0, eval_max_new_tokens=6))
    fresh = always(examples, 3)
    assert [e.prompt for e in fresh] == [e.prompt for e in examples]
    assert [e.response for e in fresh] != [e.response for e in examples] and all(len(e.response) <= 6 for e in fresh)
    assert [e.response for e in always(examples, 3)] == [e.response for e in fresh]  # seeded by micro-batch
    never = _gkd_hook(student, tok, DistillConfig(method="gkd", gkd_on_policy=0.0))
    assert never(examples, 3) is examples


def test_checkpoint_rng_state_survives_a_weights_only_load(tmp_path):
    import numpy as np

    from components.training.trainer import _numpy_state_from_safe, _numpy_state_to_safe

    np.random.seed(3)
    np.random.normal()  # leaves a cached gaussian in the state
    state = np.random.get_state()
    torch.save({"numpy": _numpy_state_to_safe(state)}, tmp_path / "s.pt")
    restored = _numpy_state_from_safe(torch.load(tmp_path / "s.pt", weights_only=True)["numpy"])
    np.random.set_state(restored)
    expected = np.random.random(3)
    np.random.set_state(state)
    assert np.array_equal(np.random.random(3), expected)


def test_a_resumed_run_returns_the_whole_history(tmp_path):
    def trainer(ckpt_dir, crash_at=None):
        torch.manual_seed(0)
        teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
        student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
        cfg = DistillConfig(method="sft", train=TrainerConfig(batch_size=2, max_steps=6, checkpoint_every=2,
                                                              eval_every=100))
        examples, _ = build_examples(tok, [tok("q")["input_ids"]] * 4, [tok("abc")["input_ids"] + [2]] * 4, cfg)
        t = Trainer(student, student_loss_fn(student, teacher, Objective(cfg), cfg.chunk_size), examples,
                    lambda ex: collate(ex, tok.pad_token_id), cfg.train, ckpt_dir, progress=False)
        if crash_at is not None:
            save = t.save

            def save_then_crash(step):
                save(step)
                if step == crash_at:
                    raise RuntimeError("crash")
            t.save = save_then_crash
        return t

    with pytest.raises(RuntimeError, match="crash"):
        trainer(tmp_path / "a", crash_at=4).train()
    resumed = trainer(tmp_path / "a").train()
    straight = trainer(tmp_path / "b").train()
    assert resumed.resumed_from == 4
    drop_timing = lambda history: [{k: v for k, v in h.items() if k != "tokens_per_second"} for h in history]  # noqa: E731
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert drop_timing(resumed.history) == drop_timing(straight.history)
