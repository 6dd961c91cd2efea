"""Task builders of the selection benchmark: fixed, disjoint, stratified splits; pools that never overlap the
zoo's pretraining images; held-out tasks as declared."""
import numpy as np
import pytest

from ncap.bench import tasks
from ncap.models.named_datasets import load_named_arrays


def test_design_has_six_tasks_two_held_out_one_of_real_images():
    assert len(tasks.TASKS) >= 6
    held = tasks.held_out_tasks()
    assert len(held) >= 2 and any(tasks.TASKS[t].real_images for t in held)
    assert set(tasks.dev_tasks()).isdisjoint(held)
    assert {"digits", "animal-mnist"} <= set(tasks.TASKS)
    assert any(t.startswith("elpv") for t in tasks.TASKS)
    with pytest.raises(KeyError, match="unknown benchmark task"):
        tasks.get_task("nope")


def test_stratified_take_keeps_class_shares_and_partitions_the_pool():
    y = np.repeat(np.arange(4), [40, 30, 20, 10])
    taken, rest = tasks.stratified_take(y, np.arange(100), 50, seed=0)
    assert sorted(np.concatenate([taken, rest]).tolist()) == list(range(100))
    assert np.bincount(y[taken], minlength=4).tolist() == [20, 15, 10, 5]
    whole, none = tasks.stratified_take(y, np.arange(100), 500, seed=0)
    assert len(whole) == 100 and len(none) == 0


@pytest.mark.parametrize("name", ["digits", "digits-noisy", "animal-mnist", "animal-mnist-inverted"])
def test_split_is_fixed_disjoint_sized_and_stratified(name):
    task = tasks.get_task(name)
    train, val = task.split()
    assert (len(train), len(val)) == (task.n_train, task.n_val)
    again_train, again_val = task.split()
    np.testing.assert_array_equal(train.x, again_train.x)
    np.testing.assert_array_equal(val.y, again_val.y)
    pool_share = np.bincount(task.load().y) / len(task.load().y)
    assert np.abs(train.class_counts() - task.n_train * pool_share).max() <= 1.5  # stratified
    assert np.abs(val.class_counts() - task.n_val * pool_share).max() <= 1.5
    small_train, small_val = task.split(max_train=100, max_val=50)
    assert (len(small_train), len(small_val)) == (100, 50)


def test_digits_split_indices_are_disjoint():
    task = tasks.get_task("digits")
    ds = task.load()
    val, rest = tasks.stratified_take(ds.y, np.arange(len(ds)), task.n_val, tasks.SPLIT_SEED)
    train, _ = tasks.stratified_take(ds.y, rest, task.n_train, tasks.SPLIT_SEED + 1)
    assert set(val.tolist()).isdisjoint(train.tolist())


def test_noisy_digits_are_a_fixed_noisy_copy_in_range():
    a, b = tasks.get_task("digits-noisy").load(), tasks.get_task("digits-noisy").load()
    np.testing.assert_array_equal(a.x, b.x)
    clean = tasks.get_task("digits").load()
    assert a.x.min() >= 0 and a.x.max() <= 1 and a.max_value == 1.0
    np.testing.assert_array_equal(a.y, clean.y)
    assert np.abs(a.x - clean.x / 16.0).mean() > 0.1


def test_animal_pools_are_disjoint_and_never_the_zoo_pretraining_half():
    _, y, _, _ = load_named_arrays("animal-mnist")
    a, b = tasks.animal_target_pools()
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert (a % 2 == 1).all() and (b % 2 == 1).all()  # even indices pretrain the zoo
    assert np.bincount(y[a]).tolist() == [250] * 10
    x, _, _, _ = load_named_arrays("animal-mnist")
    inv = tasks.get_task("animal-mnist-inverted").load()
    np.testing.assert_array_equal(inv.x, 255 - x[b])


def test_elpv_cells_split_by_type_into_a_dev_and_a_held_out_task():
    x, y, types = tasks.elpv_cells()
    assert x.shape[1:] == (1, tasks.ELPV_SIDE, tasks.ELPV_SIDE) and x.dtype == np.uint8
    mono, poly = tasks.get_task("elpv-mono").load(), tasks.get_task("elpv-poly").load()
    assert len(mono) + len(poly) == len(y) == len(types)
    assert len(mono) == int(np.sum(types == "mono"))
    assert not tasks.get_task("elpv-mono").held_out and tasks.get_task("elpv-poly").held_out
    np.testing.assert_array_equal(np.sort(np.concatenate([mono.y, poly.y])), np.sort(y))


def test_task_key_changes_with_the_split_definition():
    import dataclasses

    task = tasks.get_task("digits")
    assert task.key() == tasks.get_task("digits").key()
    assert dataclasses.replace(task, n_val=task.n_val - 1).key() != task.key()
    assert len({t.key() for t in tasks.TASKS.values()}) == len(tasks.TASKS)
