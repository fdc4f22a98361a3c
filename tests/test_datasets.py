"""lstmcore.datasets: synthetic generators, the JSB Chorales loader (tiny fixtures written here; never a download),
user sequences."""
import json
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from lstmcore.datasets import (
    Dataset,
    Split,
    adding_problem,
    copy_task,
    from_sequences,
    jsb,
    load_dataset,
    load_jsb_chorales,
    temporal_order,
)
from lstmcore.training import SequenceModel, evaluate

SHARED_JSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb-chorales"


@pytest.fixture(autouse=True)
def no_network_and_no_user_data(monkeypatch, tmp_path):
    """Tests never download, and never see the user's LSTMCORE_DATA or cache."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")
    monkeypatch.setattr(jsb.urllib.request, "urlopen", refuse)
    monkeypatch.delenv("LSTMCORE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))


# -- synthetic tasks --------------------------------------------------------------------------------------------------
def test_adding_problem_shapes_targets_and_baseline():
    data = adding_problem(length=50, n_train=20000, n_valid=10, n_test=10, seed=0)
    x, y = data.train.x, data.train.y
    assert x.shape == (20000, 50, 2) and y.shape == (20000, 1) and x.dtype == np.float32
    assert (data.train.lengths == 50).all()
    markers = x[:, :, 1]
    assert (markers.sum(axis=1) == 2).all()
    assert (markers[:, :25].sum(axis=1) == 1).all() and (markers[:, 25:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * markers).sum(axis=1), rtol=1e-6)
    baseline = np.mean((y - 1.0) ** 2)                    # always predicting E[y] = 1
    assert baseline == pytest.approx(2 / 12, abs=0.005)
    assert (data.n_inputs, data.n_outputs, data.output, data.per_step, data.metric) == (2, 1, "linear", False, "mse")


@pytest.mark.parametrize("make", [adding_problem, temporal_order, copy_task])
def test_generators_are_deterministic_and_splits_independent_of_n_train(make):
    a = make(length=20, n_train=30, n_valid=8, n_test=8, seed=4)
    b = make(length=20, n_train=30, n_valid=8, n_test=8, seed=4)
    c = make(length=20, n_train=50, n_valid=8, n_test=8, seed=4)
    d = make(length=20, n_train=30, n_valid=8, n_test=8, seed=5)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, part).x, getattr(b, part).x)
        np.testing.assert_array_equal(getattr(a, part).y, getattr(b, part).y)
    np.testing.assert_array_equal(a.test.x, c.test.x)      # more training data leaves valid/test alone
    np.testing.assert_array_equal(a.valid.y, c.valid.y)
    assert not np.array_equal(a.train.x, d.train.x)
    assert isinstance(load_dataset(a.name, length=20, n_train=30, n_valid=8, n_test=8, seed=4), Dataset)


def test_temporal_order_sequences():
    data = temporal_order(length=100, n_train=400, n_valid=5, n_test=5, seed=1)
    split = data.train
    symbols = split.x.argmax(axis=-1)
    assert split.x.shape[2] == 8 and set(np.unique(split.y)) == {0, 1, 2, 3}
    assert split.lengths.min() >= 100 and split.lengths.max() <= 110
    for row in range(50):
        n = split.lengths[row]
        seq = symbols[row, :n]
        assert seq[0] == 0 and seq[-1] == 1                 # E ... B
        assert not split.x[row, n:].any()                   # padding is zero
        relevant = np.flatnonzero(seq >= 6)
        assert len(relevant) == 2
        assert 10 <= relevant[0] <= 20 and 50 <= relevant[1] <= 60
        assert split.y[row] == 2 * (seq[relevant[0]] - 6) + (seq[relevant[1]] - 6)


def test_copy_task_sequences():
    data = copy_task(length=7, n_symbols=4, n_categories=3, n_train=20, n_valid=2, n_test=2, seed=0)
    x, y = data.train.x, data.train.y
    T = 7 + 2 * 4
    assert x.shape == (20, T, 5) and y.shape == (20, T) and y.dtype == np.int64
    symbols = x.argmax(axis=-1)
    np.testing.assert_array_equal(y[:, -4:], symbols[:, :4])
    assert (symbols[:, 4 + 7 - 1] == 4).all()              # the delimiter after the delay
    assert not y[:, :-4].any() and (symbols[:, :4] >= 1).all()
    assert (data.n_outputs, data.per_step, data.output) == (4, True, "softmax")
    model = SequenceModel(data.n_inputs, 3, data.n_outputs, output="softmax", per_step=True, seed=0)
    assert np.isfinite(evaluate(model, data.train))        # integer per-step targets work end to end


def test_generator_arguments_are_checked():
    with pytest.raises(ValueError, match="length"):
        adding_problem(length=0)
    with pytest.raises(ValueError, match="n_train"):
        copy_task(n_train=0)
    with pytest.raises(KeyError, match="adding"):
        load_dataset("timit")


# -- JSB Chorales --------------------------------------------------------------------------------------------------------
TINY = {
    "train": [[[60, 64, 67], [62], [], [21, 108]], [[48, 52], [50, 53]]],
    "valid": [[[70], [71], [72]]],
    "test": [[[40, 41], [42, 43], [44]]],
}


def check_tiny(data):
    assert (len(data.train), len(data.valid), len(data.test)) == (2, 1, 1)
    assert (data.n_inputs, data.n_outputs, data.output, data.per_step, data.metric) == \
        (88, 88, "sigmoid", True, "nll_per_step")
    split = data.train
    np.testing.assert_array_equal(split.lengths, [3, 1])   # next-step prediction: one step fewer
    assert split.x.shape == (2, 3, 88) and split.y.shape == (2, 3, 88)
    assert np.flatnonzero(split.x[0, 0]).tolist() == [60 - 21, 64 - 21, 67 - 21]
    assert np.flatnonzero(split.y[0, 0]).tolist() == [62 - 21]          # y_t = x_{t+1}
    np.testing.assert_array_equal(split.x[0, 1], split.y[0, 0])
    assert not split.x[0, 2].any() and split.y[0, 2].tolist() == [1.0] + [0.0] * 86 + [1.0]   # pitches 21, 108
    assert not split.x[1, 1:].any() and not split.y[1, 1:].any()      # padding


def test_jsb_from_a_json_file_and_folder(tmp_path):
    path = tmp_path / "jsb-chorales-quarter.json"
    path.write_text(json.dumps(TINY))
    check_tiny(load_jsb_chorales(path))
    check_tiny(load_jsb_chorales(tmp_path))
    check_tiny(load_dataset("jsb_chorales", path=str(tmp_path)))


def test_jsb_from_the_original_pickle(tmp_path):
    as_tuples = {split: [[tuple(step) for step in chorale] for chorale in chorales] for split, chorales in TINY.items()}
    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps(as_tuples, protocol=2))
    check_tiny(load_jsb_chorales(path))
    check_tiny(load_jsb_chorales(tmp_path))


class Exploit:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_jsb_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"train": [Exploit()], "valid": [], "test": []}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        load_jsb_chorales(path)


def test_jsb_from_lstmcore_data_and_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "jsb-chorales"
    folder.mkdir(parents=True)
    (folder / "jsb-chorales-quarter.json").write_text(json.dumps(TINY))
    monkeypatch.setenv("LSTMCORE_DATA", str(tmp_path / "data"))      # the folder above jsb-chorales/ is enough
    check_tiny(load_jsb_chorales(download=False))
    monkeypatch.delenv("LSTMCORE_DATA")
    cache = tmp_path / "cache"
    (cache / "lstmcore").mkdir(parents=True)
    (cache / "lstmcore" / "jsb-chorales-quarter.json").write_text(json.dumps(TINY))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    check_tiny(load_jsb_chorales(download=False))


def test_jsb_missing_says_where_to_put_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=False.*LSTMCORE_DATA"):
        load_jsb_chorales(download=False)
    with pytest.raises(FileNotFoundError, match="download from https://raw.githubusercontent.com/czhuang.*failed"):
        load_jsb_chorales()                                  # the (disabled) network fails: a clear message
    with pytest.raises(FileNotFoundError, match="no JSB Chorales file"):
        load_jsb_chorales(tmp_path / "nowhere.json")


def test_jsb_download_is_checked_and_cached(tmp_path, monkeypatch):
    """The download path with a fake response: the file lands in the cache only when it is a valid dataset."""
    class Response:
        def __init__(self, payload):
            self.payload = payload

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.payload

    calls = []
    monkeypatch.setattr(jsb.urllib.request, "urlopen",
                        lambda url, timeout: calls.append((url, timeout)) or Response(b'{"train": []}'))
    with pytest.raises(FileNotFoundError, match="failed"):
        load_jsb_chorales()
    assert not list((tmp_path / "empty-cache").rglob("*.json"))
    monkeypatch.setattr(jsb.urllib.request, "urlopen",
                        lambda url, timeout: calls.append((url, timeout)) or Response(json.dumps(TINY).encode()))
    check_tiny(load_jsb_chorales())
    assert (tmp_path / "empty-cache" / "lstmcore" / "jsb-chorales-quarter.json").is_file()
    assert calls[0][1] <= 30 and calls[0][0].endswith("jsb-chorales-quarter.json")


def test_jsb_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "test": [[[10], [60]]]}))
    with pytest.raises(ValueError, match="pitches outside"):
        load_jsb_chorales(bad)
    bad.write_text(json.dumps({"train": TINY["train"]}))
    with pytest.raises(ValueError, match="keys"):
        load_jsb_chorales(bad)


@pytest.mark.skipif(not SHARED_JSB.is_dir(), reason="the shared JSB Chorales copy (../shared) is not on this machine")
def test_the_shared_jsb_chorales_copy():
    data = load_jsb_chorales(SHARED_JSB, download=False)
    assert (len(data.train), len(data.valid), len(data.test)) == (229, 76, 77)
    assert data.train.x.shape[1:] == (128, 88)
    assert 24 <= data.train.lengths.min() and data.test.lengths.max() <= 159
    assert data.train.n_steps == 13578                     # 13807 steps in 229 chorales, one fewer each
    mask = np.arange(data.train.x.shape[1])[None, :] < data.train.lengths[:, None]
    notes = data.train.x.sum(axis=-1)[mask]
    assert 3.5 < notes.mean() < 4.0                         # four voices, sometimes fewer sounding


# -- user sequences ---------------------------------------------------------------------------------------------------
def test_from_sequences_per_step_and_last_step():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(n, 3)) for n in rng.integers(2, 9, size=20)]
    per_step = from_sequences(xs, [rng.normal(size=(len(x), 2)) for x in xs], output="linear", seed=1)
    assert per_step.per_step and (per_step.n_inputs, per_step.n_outputs) == (3, 2)
    assert (len(per_step.train), len(per_step.valid), len(per_step.test)) == (16, 2, 2)
    split = per_step.train
    for row in range(len(split)):
        n = split.lengths[row]
        assert not split.x[row, n:].any() and not split.y[row, n:].any()
    assert sorted(np.concatenate([s.lengths for s in (per_step.train, per_step.valid, per_step.test)])) == \
        sorted(len(x) for x in xs)
    labels = from_sequences(xs, [i % 3 for i in range(20)], output="softmax", seed=1)
    assert not labels.per_step and labels.n_outputs == 3 and labels.train.y.dtype == np.int64
    assert labels.metric == "cross_entropy"
    with pytest.raises(ValueError, match="per_step=True"):
        from_sequences(xs, [0] * 20, per_step=True)
    with pytest.raises(ValueError, match="20 sequences but 3 targets"):
        from_sequences(xs, [0, 1, 2])
    with pytest.raises(ValueError, match="too few"):
        from_sequences(xs[:2], [0, 1])


def test_split_validation():
    with pytest.raises(ValueError, match="lengths must lie"):
        Split(np.zeros((2, 3, 1)), np.zeros((2, 1)), [4, 1])
    with pytest.raises(TypeError, match="integers"):
        Split(np.zeros((2, 3, 1)), np.zeros((2, 1)), [1.5, 1])
    with pytest.raises(ValueError, match="N = 2 rows"):
        Split(np.zeros((2, 3, 1)), np.zeros((3, 1)), [1, 1])


@pytest.mark.parametrize("content", [
    b"", b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b'{"train": [], "valid": [], "test": []}',
    b'{"train": [1, 2], "valid": [[[60], [62]]], "test": [[[60], [62]]]}',
    b'{"train": [[[60], [null]]], "valid": [[[60], [62]]], "test": [[[60], [62]]]}',
    b'{"train": [[[60], [62.5]]], "valid": [[[60], [62]]], "test": [[[60], [62]]]}',
    b'{"train": [[[60], [NaN]]], "valid": [[[60], [62]]], "test": [[[60], [62]]]}',
    b'{"train": [[[60], "ab"]], "valid": [[[60], [62]]], "test": [[[60], [62]]]}',
    b'{"train": {"a": 1}, "valid": [[[60], [62]]], "test": [[[60], [62]]]}',
])
def test_malformed_jsb_json_raises_dataset_error_naming_the_file(tmp_path, content):
    from lstmcore.datasets import DatasetError
    from lstmcore.datasets.jsb import read_chorales
    path = tmp_path / "jsb-chorales-quarter.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="jsb-chorales-quarter.json"):
        read_chorales(path)


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"not a pickle at all"])
def test_damaged_jsb_pickle_raises_dataset_error(tmp_path, content):
    from lstmcore.datasets import DatasetError
    from lstmcore.datasets.jsb import read_chorales
    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="JSB Chorales.pickle"):
        read_chorales(path)
