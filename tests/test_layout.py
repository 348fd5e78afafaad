"""runfolder/layout.py: what a folder holds, in words, and whether a new run may be written there;
tiny hand-made folders (the runs that make them are test_checkpoints.py's and test_resume.py's)."""

import json
import os

import pytest

from torchlogreg.base.exceptions import CheckpointError, ConfigError
from torchlogreg.runfolder.layout import (
    CHECKPOINT_META,
    FORMAT,
    META_FILE,
    REPORT_DIR,
    REPORT_FIGURES,
    REPORT_PAGE,
    RUN_FILES,
    check_run_target,
    checkpoint_diverged,
    has_training_state,
    is_run_folder,
    read_json,
    remove_run,
)


def _write(path, data):
    path.write_text(json.dumps(data))


def test_an_empty_or_missing_folder_takes_a_run(tmp_path):
    check_run_target(tmp_path, overwrite=False)
    check_run_target(tmp_path / "new", overwrite=False)
    assert not is_run_folder(tmp_path) and not has_training_state(tmp_path)


@pytest.mark.parametrize(
    "files, holds",
    [
        ({META_FILE: {"format": FORMAT}}, "already holds a run;"),
        ({META_FILE: {"format": "other"}}, f"already holds a {META_FILE} that is not a torchlogreg run's"),
        ({CHECKPOINT_META: {"diverged": False}}, r"already holds an interrupted training \(its checkpoint\)"),
        ({CHECKPOINT_META: {"diverged": True}}, "the last good checkpoint of a training that diverged"),
    ],
    ids=["run", "foreign-model-json", "interrupted", "diverged"],
)
def test_a_folder_holding_a_run_says_what_it_holds(tmp_path, files, holds):
    for name, data in files.items():
        _write(tmp_path / name, data)
    with pytest.raises(ConfigError, match=holds) as error:
        check_run_target(tmp_path, overwrite=False)
    assert error.value.parameter == "out" and "overwrite=True" in str(error.value)
    check_run_target(tmp_path, overwrite=True)
    assert is_run_folder(tmp_path)
    assert checkpoint_diverged(tmp_path) == (files.get(CHECKPOINT_META) == {"diverged": True})


def test_the_users_files_of_a_runs_names_are_named_before_they_are_replaced(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "history.csv").write_text("mine\n")
    with pytest.raises(ConfigError, match="holds metrics.json, history.csv, which a run would replace"):
        check_run_target(tmp_path, overwrite=False)
    check_run_target(tmp_path, overwrite=True)


def test_a_file_or_a_link_to_nothing_is_no_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    for path in (tmp_path / "file", tmp_path / "dangling"):
        with pytest.raises(ConfigError, match="out"):
            check_run_target(path, overwrite=True)


def test_remove_run_removes_the_run_and_its_report_and_keeps_the_rest(tmp_path):
    for name in RUN_FILES:
        (tmp_path / name).write_text("old")
    report = tmp_path / REPORT_DIR
    report.mkdir()
    ours = [REPORT_PAGE, *(f"{figure}.png" for figure in REPORT_FIGURES)]
    for name in [*ours, "notes.html", "photo.png"]:
        (report / name).write_text("x")
    (tmp_path / CHECKPOINT_META).write_text("{}")  # (resumable.remove_training_state's, not this)
    (tmp_path / "data.csv").write_text("mine")
    remove_run(tmp_path)
    assert sorted(p.name for p in report.iterdir()) == ["notes.html", "photo.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_META, "data.csv", REPORT_DIR])


def test_read_json_refuses_what_is_not_one_small_object(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    os.symlink(tmp_path / "list.json", tmp_path / "link.json")
    for name, message in [("list.json", "must hold a JSON object"), ("broken.json", "is not valid JSON"),
                          ("link.json", "link"), ("missing.json", "is missing")]:  # fmt: skip
        with pytest.raises(CheckpointError, match=message):
            read_json(tmp_path / name)
