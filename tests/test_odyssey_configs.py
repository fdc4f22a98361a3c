"""The Odyssey study configs a user runs (examples/ablation/odyssey_jsb*.toml): the full protocol's settings, and the
data found wherever the JSB loader finds it (--dataset-option path, $LSTMCORE_DATA, the cache), never by a path of
the development machine."""
import json
from pathlib import Path

import pytest

from lstmcore.ablation.config import StudyConfig, load_toml
from lstmcore.ablation.space import SearchSpace
from lstmcore.ablation.trial import check_dataset
from lstmcore.cli import main as cli_main
from shared_data import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ablation"
REDUCED, FULL = EXAMPLES / "odyssey_jsb.toml", EXAMPLES / "odyssey_jsb_full.toml"
CONFIGS = [REDUCED, FULL]


def _tiny_jsb(folder: Path) -> Path:
    """A JSB-shaped JSON with 3/2/1 chorales of 4/3/5 steps (pitches within 21..108)."""
    chorale = [[60, 64, 67], [62, 65], [], [57, 60, 64, 69], [48]]
    data = {"train": [chorale[:4]] * 3, "valid": [chorale[:3]] * 2, "test": [chorale]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "jsb-chorales-quarter.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def no_data_anywhere(tmp_path, monkeypatch):
    """Neither $LSTMCORE_DATA nor a file in the (empty, temporary) cache folder."""
    monkeypatch.delenv("LSTMCORE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def _config(path, *cli_tables) -> StudyConfig:
    return StudyConfig.from_tables(load_toml(path), *cli_tables)


def _load(config):
    return check_dataset(config.dataset, config.dataset_options)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_name_no_data_path(path):
    config = _config(path)
    assert config.dataset == "jsb_chorales"
    assert config.dataset_options == {"download": False}


def test_full_config_is_the_papers_protocol():
    config = _config(FULL)
    assert config.variants == ["peephole", "nig", "nfg", "nog", "niaf", "noaf", "vanilla", "coupled", "fgr"]
    assert config.trials == 200 and config.independent is True and config.baseline == "peephole"
    training = config.training
    assert (training["optimizer"], training["nesterov"], training["batch_size"]) == ("sgd", True, 1)
    assert (training["max_epochs"], training["patience"], training["time_budget"]) == (150, 15, None)
    assert training["loss_normalization"] == "sequence"
    assert config.space.to_dict() == SearchSpace.paper().to_dict()
    assert config.model["num_layers"] == 1 and not config.model["bidirectional"]
    assert "best available figures for the paper's settings" in " ".join(FULL.read_text().split())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_data_from_lstmcore_data(path, no_data_anywhere, monkeypatch):
    file = _tiny_jsb(no_data_anywhere / "elsewhere")
    for where in (file, file.parent):           # the file, or its folder
        monkeypatch.setenv("LSTMCORE_DATA", str(where))
        data = _load(_config(path))
        assert (len(data.train), len(data.valid), len(data.test)) == (3, 2, 1)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_data_from_the_cache(path, no_data_anywhere):
    _tiny_jsb(no_data_anywhere / "cache" / "lstmcore")
    data = _load(_config(path))
    assert (len(data.train), len(data.valid), len(data.test)) == (3, 2, 1)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_data_from_a_dataset_option(path, no_data_anywhere):
    file = _tiny_jsb(no_data_anywhere / "mine")
    config = _config(path, {"dataset": {"path": str(file)}})
    assert config.dataset_options == {"download": False, "path": str(file)}
    assert len(_load(config).train) == 3


def test_without_data_the_command_says_where_to_put_it(no_data_anywhere, capsys):
    code = cli_main(["ablate", "--config", str(FULL), "--out", str(no_data_anywhere / "study"), "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "JSB Chorales not found and download=False" in message
    assert "LSTMCORE_DATA" in message and str(no_data_anywhere / "cache" / "lstmcore") in message
    assert not (no_data_anywhere / "study" / "study.json").exists()


def test_reduced_study_grows_with_its_recorded_path():
    """docs/results/jsb-odyssey was run when the config named the file: with that path as a --dataset-option and the
    README's flags, the plan (fingerprint) is the published study's, so its grow command still resumes it."""
    published = json.loads((ROOT / "docs" / "results" / "jsb-odyssey" / "study.json").read_text())
    recorded = published["config"]["dataset_options"]["path"]
    config = _config(REDUCED, {"study": {"independent": False, "trials": 80}, "dataset": {"path": recorded},
                               "training": {"max_epochs": 50, "patience": 5, "time_budget": 120.0}})
    assert config.fingerprint == published["fingerprint"]
    readme = (ROOT / "docs" / "results" / "jsb-odyssey" / "README.md").read_text()
    assert "--dataset-option path=" in readme


def test_the_real_file_through_lstmcore_data(monkeypatch):
    folder = shared_data_dir("jsb-chorales", "*.json")
    if folder is None:
        pytest.skip("no shared JSB Chorales data beside the checkout")
    monkeypatch.setenv("LSTMCORE_DATA", str(folder))
    data = _load(_config(FULL))
    assert (len(data.train), len(data.valid), len(data.test)) == (229, 76, 77)
