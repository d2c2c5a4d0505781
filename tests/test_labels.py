"""Label files: the Multi-FFDI CSV format and every way it can be wrong."""
import warnings

import pytest

from deepfake_workflow.errors import DataError
from deepfake_workflow.labels import read_labels

NAMES = [f"{i:032x}.jpg" for i in range(4)]


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "trainset"
    d.mkdir()
    for n in NAMES:
        (d / n).write_bytes(b"x")
    return d


def write(tmp_path, text, name="labels.txt", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def good_text(newline="\n"):
    rows = ["img_name,target"] + [f"{n},{i % 2}" for i, n in enumerate(NAMES)]
    return newline.join(rows) + newline


def test_reads_plain_file(tmp_path, image_dir):
    df = read_labels(write(tmp_path, good_text()), image_dir=image_dir)
    assert list(df.columns) == ["img_name", "target"]
    assert df["target"].tolist() == [0, 1, 0, 1]


def test_tolerates_bom_crlf_spaces_and_extra_columns(tmp_path, image_dir):
    text = "\ufeffimg_name, target ,method\r\n" + "".join(f"{n}, {i % 2} ,x\r\n" for i, n in enumerate(NAMES))
    df = read_labels(write(tmp_path, text), image_dir=image_dir)
    assert df["img_name"].tolist() == NAMES and df["target"].tolist() == [0, 1, 0, 1]
    assert "method" in df.columns


@pytest.mark.parametrize("text, needle", [
    ("", "is empty"),
    ("img_name,target\n", "lists no images (empty split)"),
    (f"{NAMES[0]},1\n{NAMES[1]},0\n", "the header is missing"),
    ("name,label\na.jpg,1\n", "expected header 'img_name,target'"),
    ("img_name\na.jpg\n", "no 'target' column"),
    (f"img_name,target\n{NAMES[0]},1\n{NAMES[1]},2\n", "row 3: target '2'"),
    (f"img_name,target\n{NAMES[0]},1\n{NAMES[1]},\n", "row 3: target ''"),
    (f"img_name,target\n{NAMES[0]},1\n{NAMES[1]},0\n{NAMES[0]},1\n", "row 4: duplicate img_name"),
    ("img_name,target\n../etc/passwd,1\n", "must be a plain file name"),
])
def test_bad_files_name_file_and_row(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_labels(p)
    assert needle in str(err.value) and str(p) in str(err.value)


def test_listed_image_missing_names_row_and_count(tmp_path, image_dir):
    (image_dir / NAMES[2]).unlink()
    with pytest.raises(DataError) as err:
        read_labels(write(tmp_path, good_text()), image_dir=image_dir)
    assert "row 4" in str(err.value) and NAMES[2] in str(err.value) and "1 listed image(s) missing" in str(err.value)


def test_unlisted_images_warn_with_count(tmp_path, image_dir):
    (image_dir / "extra1.jpg").write_bytes(b"x")
    (image_dir / "extra2.jpg").write_bytes(b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_labels(write(tmp_path, good_text()), image_dir=image_dir)
    assert any("2 file(s) on disk are not listed" in str(w.message) for w in caught)


def test_missing_label_file_and_image_dir(tmp_path):
    with pytest.raises(DataError, match="label file not found"):
        read_labels(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="image folder not found"):
        read_labels(write(tmp_path, good_text()), image_dir=tmp_path / "missing")


def test_test_list_without_target(tmp_path):
    df = read_labels(write(tmp_path, "img_name\n" + "\n".join(NAMES) + "\n"), require_target=False)
    assert df["target"].tolist() == [-1] * 4
