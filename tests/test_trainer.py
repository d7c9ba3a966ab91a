"""Trainer against hand-written loops; its checkpoints resume exactly and check every entry."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from test_train_step import init_params, loss_fn, make_batches

import gradtx


def make_trainer(**kwargs):
    schedule = gradtx.schedules.warmup(gradtx.schedules.cosine_decay(0.05, 40), 5)
    opt = gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=schedule, weight_decay=1e-3),
    )
    return gradtx.Trainer(loss_fn, opt, init_params(), progress=False, **kwargs)


def test_trainer_fit_follows_the_hand_written_loop():
    batches = make_batches(6)
    trainer = make_trainer()
    summaries = trainer.fit(batches, epochs=3)

    opt = trainer.optimizer
    update = opt.update  # eager: the Trainer's jitted step is checked against plain Python
    params, state, losses = init_params(), opt.init(init_params()), []
    for _ in range(3):
        for batch in batches:
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            updates, state = update(grads, state, params)
            params = gradtx.apply_updates(params, updates)
            losses.append(float(loss))
    assert_trees_close(trainer.params, params, rtol=1e-5)
    np.testing.assert_allclose(trainer.history["loss"], losses, rtol=1e-5)
    assert [s["steps"] for s in summaries] == [6, 6, 6]
    np.testing.assert_allclose(
        [s["loss"] for s in summaries], np.mean(np.reshape(losses, (3, 6)), axis=1), rtol=1e-5
    )
    assert len(trainer.history["grad_norm"]) == 18
    assert trainer.epochs == summaries


def test_trainer_save_load_resumes_bit_identically(tmp_path):
    batches = make_batches(5)
    trainer = make_trainer()
    trainer.fit(batches, epochs=2)
    path = tmp_path / "checkpoint.npz"
    trainer.save(path)
    trainer.fit(batches, epochs=2)

    resumed = make_trainer()
    resumed.load(path)
    resumed.fit(batches, epochs=2)
    for a, b in zip(jax.tree.leaves(trainer.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        jax.tree.leaves(trainer.opt_state), jax.tree.leaves(resumed.opt_state), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_trainer_load_checks_everything_before_replacing_anything(tmp_path):
    trainer = make_trainer()
    trainer.fit(make_batches(2))
    path = tmp_path / "run"  # no suffix: written exactly where asked
    trainer.save(path)
    assert os.listdir(tmp_path) == ["run"]

    other = gradtx.Trainer(
        loss_fn,
        gradtx.adam(1e-2),
        {"w": jnp.zeros((4, 2)), "b": jnp.zeros(3)},
        progress=False,
    )
    before = jax.tree.map(np.asarray, (other.params, other.opt_state))
    with pytest.raises(ValueError, match=r"params/\['w'\]: expected shape \(4, 2\)"):
        other.load(path)
    after = jax.tree.map(np.asarray, (other.params, other.opt_state))
    jax.tree.map(np.testing.assert_array_equal, before, after)

    plain = gradtx.Trainer(loss_fn, gradtx.adam(1e-2), init_params(), progress=False)
    with pytest.raises(ValueError, match=r"the file has no entry 'state/"):
        plain.load(path)


def test_trainer_learning_rate_like_mxnet():
    opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
    trainer = gradtx.Trainer(loss_fn, opt, init_params(), progress=False)
    assert trainer.learning_rate == pytest.approx(0.1)
    batch = make_batches(1)[0]
    trainer.step(batch)
    trainer.set_learning_rate(0.0)
    assert trainer.learning_rate == 0.0
    frozen = jax.tree.map(np.asarray, trainer.params)
    trainer.step(batch)  # a zero rate: params stay, and the step did not recompile to get here
    jax.tree.map(np.testing.assert_array_equal, frozen, jax.tree.map(np.asarray, trainer.params))
    assert trainer._train_step._cache_size() == 1

    plain = gradtx.Trainer(loss_fn, gradtx.sgd(0.1), init_params(), progress=False)
    with pytest.raises(ValueError, match="inject_hyperparams"):
        _ = plain.learning_rate
    with pytest.raises(ValueError, match="inject_hyperparams"):
        plain.set_learning_rate(0.5)
    scheduled = make_trainer()
    with pytest.raises(ValueError, match="driven by a schedule"):
        scheduled.set_learning_rate(0.5)


def test_trainer_fit_rejects_empty_and_one_shot_batches():
    trainer = make_trainer()
    before = jax.tree.map(np.asarray, trainer.params)
    with pytest.raises(ValueError, match="no batch in epoch 1"):
        trainer.fit([])
    with pytest.raises(ValueError, match="one-shot iterator"):
        trainer.fit(iter(make_batches(3)), epochs=2)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        trainer.fit(make_batches(3), epochs=0)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, trainer.params))
    assert trainer.history == {}


def test_trainer_fit_takes_a_function_of_the_epoch_and_an_eval_fn():
    batches = make_batches(4)
    seen = []

    def per_epoch(epoch):
        seen.append(epoch)
        return batches[epoch:] + batches[:epoch]

    trainer = make_trainer()
    summaries = trainer.fit(per_epoch, epochs=2, eval_fn=lambda p: {"val": loss_fn(p, batches[0])})
    assert seen == [0, 1]
    assert summaries[-1]["val"] == pytest.approx(float(loss_fn(trainer.params, batches[0])))
    assert summaries[-1]["learning_rate"] == pytest.approx(float(trainer.learning_rate))


def test_trainer_progress_bar_when_forced(capsys):
    trainer = make_trainer()
    trainer.progress = True
    trainer.fit(make_batches(3), epochs=2)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "3/3" in err
    # The first step's compilation is its own phase: epoch 1's bar starts at 1/3, so its
    # rate and estimate are the steps' own; epoch 2 compiles nothing.
    assert "epoch 1/2: compiling:   0%" in err and "epoch 2/2: compiling" not in err
    assert "epoch 1/2:   0%" not in err and "epoch 1/2:  33%" in err
    assert "epoch 2/2:   0%" in err


def test_a_schedule_free_trainer_evaluates_and_exports_its_average(tmp_path):
    """fit's eval_fn, evaluate and checkpoints see schedule-free's x, not the trained y."""
    batches = make_batches(4)
    opt = gradtx.schedule_free_adamw(1e-2, warmup_steps=3, weight_decay=1e-3)
    trainer = gradtx.Trainer(loss_fn, opt, init_params(), progress=False)
    seen = []
    trainer.fit(batches, epochs=2, eval_fn=lambda p: seen.append(p) or loss_fn(p, batches[0]))

    average = gradtx.schedule_free_eval_params(trainer.opt_state, trainer.params)
    assert_trees_close(trainer.eval_params, average, rtol=1e-6)
    assert_trees_close(seen[-1], average, rtol=1e-6)
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(average), jax.tree.leaves(trainer.params), strict=True)
    )
    assert moved > 1e-4  # x and y differ: evaluating at y would be a different model
    np.testing.assert_allclose(
        trainer.evaluate(lambda p: loss_fn(p, batches[0])), loss_fn(average, batches[0]), rtol=1e-6
    )

    path = tmp_path / "checkpoint.npz"
    trainer.save(path)
    with np.load(path) as f:
        exported = {k: f[k] for k in f.files if k.startswith("eval_params/")}
    flat = jax.tree_util.tree_flatten_with_path(trainer.eval_params)[0]
    assert set(exported) == {f"eval_params/{jax.tree_util.keystr(p)}" for p, _ in flat}
    for p, x in flat:
        np.testing.assert_array_equal(exported[f"eval_params/{jax.tree_util.keystr(p)}"], x)

    resumed = gradtx.Trainer(loss_fn, opt, init_params(), progress=False)
    resumed.load(path)  # the eval_params entries follow from the rest: not read back
    assert_trees_close(resumed.eval_params, trainer.eval_params, rtol=0)


def test_other_learners_evaluate_at_their_params_and_save_no_eval_params(tmp_path):
    trainer = make_trainer()
    trainer.fit(make_batches(2))
    assert trainer.eval_params is trainer.params
    assert gradtx.eval_params(trainer.opt_state, trainer.params) is trainer.params
    trainer.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as f:
        assert not [k for k in f.files if k.startswith("eval_params/")]
