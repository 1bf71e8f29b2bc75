import pytest

from emodet.config import Config, check_data_root, load_config
from emodet.core.errors import UsageError

from conftest import REPO

CONFIGS = ["fc_mfcc", "resnet_mfcc", "lstm_mfcc", "resnet_logmel", "cnn_logmel", "fc_compare", "linear_compare",
           "linear_egemaps", "linear_emobase", "encoder_whisper_linear", "encoder_whisper_finetune", "edge_student",
           "edge_dscnn", "edge_stem_finetune", "general"]


def test_every_shipped_config_is_checked():
    assert sorted(CONFIGS) == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate_and_only_need_a_data_root(name, tmp_path):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    with pytest.raises(UsageError, match=r"data.root is a placeholder \('DATA_ROOT_PLACEHOLDER'\): pass --data-root DIR"):
        check_data_root(cfg)
    cfg = load_config(REPO / "configs" / f"{name}.yaml", data_root=str(tmp_path))
    assert check_data_root(cfg) == tmp_path


def test_unknown_key_names_closest(tmp_path):
    (tmp_path / "c.yaml").write_text("training:\n  epoch: 3\n")
    with pytest.raises(UsageError, match=r"unknown key 'training.epoch'; did you mean 'training.epochs'\?"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("modle:\n  name: fc\n")
    with pytest.raises(UsageError, match=r"unknown key 'modle'; did you mean 'model'\?"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(UsageError, match=r"--set training.early_stopping.patiense: unknown key .*did you mean 'training.early_stopping.patience'"):
        load_config(None, ["training.early_stopping.patiense=3"])


def test_wrong_types_and_values(tmp_path):
    (tmp_path / "c.yaml").write_text("training:\n  epochs: ten\n")
    with pytest.raises(UsageError, match=r"training.epochs must be integer, got 'ten'"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(UsageError, match="training.amp must be true/false, got 1"):
        load_config(None, ["training.amp=1"])
    with pytest.raises(UsageError, match="data.normalize must be one of none, global, corpus, speaker, got 'per_speaker'"):
        load_config(None, ["data.normalize=per_speaker"])
    with pytest.raises(UsageError, match="training.epochs must be at least 1"):
        load_config(None, ["training.epochs=0"])
    with pytest.raises(UsageError, match="expected key.sub=value"):
        load_config(None, ["training.epochs"])
    for bad in ("[1]", "[3]", "[0.9, x]", "[0.9, 0.9]", "0.9"):
        with pytest.raises(UsageError, match="training.augment.speed"):
            load_config(None, [f"training.augment.speed={bad}"])
    assert load_config(None, ["training.augment.speed=[0.9, 1.1]"]).training.augment.speed == [0.9, 1.1]
    (tmp_path / "bad.yaml").write_text("training: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_overrides_and_defaults():
    cfg = load_config(None, ["training.epochs=3", "model.params={hidden: [8]}", "training.lr=2e-3"], data_root="/x")
    assert cfg.training.epochs == 3 and cfg.model.params == {"hidden": [8]}
    assert cfg.training.lr == 0.002 and cfg.data.root == "/x"
    assert Config().training.early_stopping.metric == "uar"
    assert Config.from_mapping(cfg.to_dict(), "round trip") == cfg  # what a run saves loads back the same


def test_data_root_errors(tmp_path):
    for root in ("D:/DATA/EmotionDataset", "DATA_ROOT_PLACEHOLDER"):
        with pytest.raises(UsageError, match="placeholder.*--data-root"):
            check_data_root(load_config(None, data_root=root))
    with pytest.raises(UsageError, match=r"data.root '.*nope': no such folder \(pass --data-root"):
        check_data_root(load_config(None, data_root=str(tmp_path / "nope")))
    with pytest.raises(UsageError, match="no data: set data.root"):
        check_data_root(load_config(None))


def test_yaml_is_loaded_safely(tmp_path):
    (tmp_path / "evil.yaml").write_text("training: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")


def test_set_inside_a_free_mapping_keeps_its_other_keys():
    cfg = load_config(REPO / "configs" / "fc_compare.yaml", ["model.params.hidden=[32]"])
    assert cfg.model.params == {"pooling": "mean", "hidden": [32], "dropout": 0.5}
    cfg = load_config(REPO / "configs" / "resnet_logmel.yaml", ["features.params.n_mels=40"])
    assert cfg.features.params == {"n_mels": 40}


def test_config_differences_name_the_keys():
    from emodet.config import config_differences

    a = load_config(None, ["training.epochs=3"])
    b = load_config(None, ["training.epochs=4", "data.normalize=global"])
    assert config_differences(a, b) == ["data.normalize", "training.epochs"]
    assert config_differences(a, a) == []
