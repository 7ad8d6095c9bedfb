import pytest

from twotower.bench.train import StepTimer, _summary


class _Model:
    stop_training = False


def test_per_step_times_after_the_warmup(monkeypatch):
    times = iter([0.0, 1.0, 1.5, 2.5, 2.75, 3.0, 4.0])
    monkeypatch.setattr("twotower.bench.train.time.perf_counter", lambda: next(times))
    timer = StepTimer(warmup=2, steps=4)
    timer.set_model(_Model())
    timer.on_epoch_begin(0)
    for batch in range(7):
        timer.on_train_batch_end(batch)
        if batch < 6:
            assert not timer.model.stop_training
    assert timer.model.stop_training  # 7 steps > warmup + steps
    # Steps 3..7 end at 1.5, 2.5, 2.75, 3.0, 4.0: four gaps.
    assert timer.seconds() == [1.0, 0.25, 0.25, 1.0]
    assert _summary(timer.seconds(), 100)["median_ms"] == 625.0


def test_several_steps_per_call_are_split_evenly(monkeypatch):
    times = iter([0.0, 4.0, 8.0, 10.0])
    monkeypatch.setattr("twotower.bench.train.time.perf_counter", lambda: next(times))
    timer = StepTimer(warmup=4, steps=8)
    timer.set_model(_Model())
    timer.on_epoch_begin(0)
    for batch in (3, 7, 11, 15):  # steps_per_execution=4: Keras reports each call's last
        timer.on_train_batch_end(batch)
    assert timer.seconds() == [1.0] * 4 + [0.5] * 4


def test_nothing_timed_is_an_error():
    with pytest.raises(RuntimeError, match="warm-up"):
        _summary([], 10)


def test_train_bench_parts_are_checked():
    from common.settings import ConfigError
    from twotower.bench.settings import TrainBench

    with pytest.raises(ConfigError, match="parts"):
        TrainBench(parts=["catalog", "speed"]).check()
    with pytest.raises(ConfigError, match="clicked_items"):
        TrainBench(catalogs=[100], clicked_items=1_000).check()
    with pytest.raises(ConfigError, match="brands"):
        TrainBench(brands=[0, 100]).check()
    with pytest.raises(ConfigError, match="brands"):
        TrainBench(brands=[]).check()
    TrainBench(brands=[], parts=["catalog"]).check()  # not measured: not needed
