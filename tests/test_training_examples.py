"""The training examples run end to end (tiny settings; JSB from a fixture written here, never a download)."""
import json
import math
import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name):
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"]


def test_keras_seq2seq_example():
    summary = example("keras_seq2seq.py")(["--n-train", "256", "--epochs", "3", "--steps", "20", "--hidden", "8"])
    assert summary["status"] == "completed" and math.isfinite(summary["test_mse"])


def test_torch_classifier_example(capsys):
    args = ["--n-train", "96", "--epochs", "2", "--hidden", "8"]
    try:
        import torch  # noqa: F401
        args.append("--check-torch")
    except ImportError:
        pass
    summary = example("torch_classifier.py")(args)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    if "--check-torch" in args:
        assert summary["max_abs_difference_vs_torch"] < 1e-4


def test_adding_problem_example(tmp_path):
    out = tmp_path / "adding.json"
    summary = example("adding_problem.py")(["--length", "10", "--n-train", "64", "--epochs", "2", "--hidden", "8",
                                            "--variant", "nfg", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["test_mse"] == summary["test_mse"] and len(saved["history"]) == 2


def test_train_jsb_example_on_a_fixture(tmp_path):
    data = {"train": [[[60, 64], [62], [60, 64, 67]]] * 4, "valid": [[[60], [62], [64]]], "test": [[[62], [60]]]}
    (tmp_path / "jsb-chorales-quarter.json").write_text(json.dumps(data))
    checkpoint = tmp_path / "model.npz"
    summary = example("train_jsb.py")(["--data", str(tmp_path), "--epochs", "2", "--hidden", "6",
                                       "--checkpoint", str(checkpoint)])
    assert summary["status"] == "completed" and math.isfinite(summary["test_nll"])
    from lstmcore.training import checkpoint_metadata, load_checkpoint
    assert load_checkpoint(checkpoint).variant == "peephole"
    assert checkpoint_metadata(checkpoint)["test_nll"] == pytest.approx(summary["test_nll"])


def test_torch_module_classifier_example():
    pytest.importorskip("torch")
    results = example("torch_module_classifier.py")(["--n-train", "64", "--epochs", "1", "--hidden", "4"])
    assert [r["cell"] for r in results] == ["nn.LSTM", "peephole", "coupled"]
    assert results[1]["parameters"] == results[0]["parameters"] + 3 * 4  # PyTorch's weights, plus three peepholes
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["train_loss"]) for r in results)
