"""The one rule for class names (torchlogreg.data.classnames), and the places it is applied: a data set
being made (`data convert`), a dataset folder and a run folder being read. A name that breaks an
output (a lone surrogate, a line break) or that a later step refuses (too long, a duplicate) is
refused where it enters, in one line."""

import json
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchlogreg import CheckpointError, ConfigError
from torchlogreg.apps.cli import main
from torchlogreg.data.classnames import MAX_CLASS_NAME, class_names_problem
from torchlogreg.runfolder.checkpoints import load_run

BAD = {
    "surrogate": ["\ud800x", "b"],
    "newline": ["a\nb", "c"],
    "blank": ["  ", "b"],
    "empty": ["", "b"],
    "too long": ["a" * (MAX_CLASS_NAME + 1), "b"],
    "duplicate": ["a", "a"],
    "not strings": [1, "b"],
}


@pytest.mark.parametrize("names", BAD.values(), ids=BAD.keys())
def test_bad_names_are_named_in_one_line(names):
    problem = class_names_problem(names)
    assert problem and "\n" not in problem and len(problem) < 300


@given(st.lists(st.text(min_size=1, max_size=MAX_CLASS_NAME), min_size=2, max_size=6))
def test_accepted_names_survive_every_output(names):
    # what the rule lets through can be written as UTF-8 (CSV, JSON, HTML) and is one line
    if class_names_problem(names) is None:
        for name in names:
            name.encode("utf-8")
            assert "\n" not in name and "\r" not in name and name.strip()
        assert len(set(names)) == len(names)


@pytest.mark.parametrize("kind", ["surrogate", "too long", "duplicate"])
def test_a_run_with_bad_class_names_is_refused_on_load(default_run, tmp_path, kind):
    names = BAD[kind]
    folder = tmp_path / "run"
    shutil.copytree(default_run, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["class_names"] = names + [str(i) for i in range(len(names), 10)]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="class name 0|class name 1"):
        load_run(folder)


def test_convert_refuses_a_class_name_predict_would_refuse(tmp_path, capsys):
    # a 201-character name used to be written by convert, and the trained run could never be loaded
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 255, (20, 4, 4), dtype=np.uint8),
        y_train=np.arange(20) % 2,
        x_test=rng.integers(0, 255, (6, 4, 4), dtype=np.uint8),
        y_test=np.arange(6) % 2,
    )
    long = "a" * (MAX_CLASS_NAME + 1)
    args = ["data", "convert", "--from-npz", str(tmp_path / "d.npz"), "--out", str(tmp_path / "ds")]
    assert main([*args, "--class-names", f"{long},b"]) == ConfigError.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--class-names: class name 0" in err
    assert not (tmp_path / "ds").exists()


def test_convert_refuses_a_folder_class_whose_name_cannot_be_written(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "test"):
        for name in ("ok", "new\nline"):
            folder = tmp_path / "pictures" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    args = ["data", "convert", "--from-folder", str(tmp_path / "pictures"), "--out", str(tmp_path / "ds")]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not printable" in err
    assert not (tmp_path / "ds").exists()
