"""Where each split lives: the Multi-FFDI layout, per-path overrides, and the test-split choice."""
from deepfake_workflow.config import validate_config
from deepfake_workflow.layout import scored_split, split_paths


def test_default_layout_under_root(tmp_path):
    cfg = validate_config({"data": {"source": "local", "root": str(tmp_path)}})
    assert split_paths(cfg, "train").images == str(tmp_path / "phase1/trainset")
    assert split_paths(cfg, "val").labels == str(tmp_path / "phase1/valset_label.txt")
    assert split_paths(cfg, "test").labels == str(tmp_path / "phase2/testset1_seen_nolabel.txt")


def test_each_path_can_be_set_on_its_own(tmp_path):
    cfg = validate_config({"data": {"source": "local", "root": str(tmp_path), "val_images": "/elsewhere/val"}})
    assert split_paths(cfg, "val").images == "/elsewhere/val"
    assert split_paths(cfg, "val").labels == str(tmp_path / "phase1/valset_label.txt")


def test_demo_data_lives_under_results_dir():
    cfg = validate_config({"results_dir": "out"})
    assert split_paths(cfg, "train").images == "out/data/raw/phase1/trainset"


def test_without_phase2_the_validation_split_is_scored(tmp_path):
    cfg = validate_config({"data": {"source": "local", "root": str(tmp_path)}})
    assert scored_split(cfg) == "val"
    (tmp_path / "phase2").mkdir()
    (tmp_path / "phase2/testset1_seen_nolabel.txt").write_text("img_name\n")
    assert scored_split(cfg) == "test"
    forced = validate_config({"data": {"source": "local", "root": str(tmp_path), "test_split": "val"}})
    assert scored_split(forced) == "val"
    assert scored_split(validate_config({})) == "test"  # the demo has a phase-2 test set
