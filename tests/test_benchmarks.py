"""Smoke test of the benchmark entry points in tiny mode: they run and their tables have the
promised columns. No thresholds on time here (speed belongs in benchmarks/)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _benchmark(module: str, *args, tmp_path, data_root) -> subprocess.CompletedProcess:
    """`python -m benchmarks.MODULE ARGS --out tmp_path --data-root data_root`, from the repository,
    which must succeed."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)]
    command += ["--out", str(tmp_path), "--data-root", str(data_root)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    return done


def _header(output: str, first_column: str) -> str:
    """The printed table's header line: the one that opens with `first_column`."""
    return next(line for line in output.splitlines() if line.startswith(f"| {first_column} |"))


def test_compare_tiny(tmp_path, data_root):
    done = _benchmark("compare", "--tiny", tmp_path=tmp_path, data_root=data_root)
    assert _header(done.stdout, "row") == (
        "| row | device | test accuracy | train s (median) | repeats | CLI end-to-end s | peak MB "
        "| speed-up |"
    )
    (json_file,) = tmp_path.glob("*-tiny.json")
    rows = json.loads(json_file.read_text())["rows"]
    workers = {row["worker"] for row in rows}
    assert {
        "tutorial-loop",
        "sklearn",
        "torchlogreg-tutorial",
        "torchlogreg-default",
        "estimator-sgd",
        "estimator-lbfgs",
    } <= workers
    assert "- batch 256: x @ W.T" in done.stdout  # the products' rates, the machine's limit
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["train_seconds"] > 0 and row["peak_mb"] > 0
    ours = next(row for row in rows if row["worker"] == "torchlogreg-default")
    assert ours["cli_seconds"] > 0 and "speedup" in ours


def test_scaling_tiny(tmp_path, data_root):
    _benchmark("scaling", "--sizes", "500,2000", tmp_path=tmp_path, data_root=data_root)
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert [row["size"] for row in rows] == [500, 2000]
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert "| N | s / epoch |" in (tmp_path / "scaling.md").read_text()


def test_predict_speed_tiny(tmp_path, data_root):
    _benchmark("predict_speed", "--tiny", tmp_path=tmp_path, data_root=data_root)
    table = (tmp_path / "predict_speed-tiny.md").read_text()
    assert "600-row .npy" in table and "Kaggle CSV" in table


def test_torchrun_tiny(tmp_path, data_root):
    _benchmark("torchrun", "--tiny", "--repeats", "1", tmp_path=tmp_path, data_root=data_root)
    rows = json.loads((tmp_path / "torchrun.json").read_text())["rows"]
    assert sorted(row["processes"] for row in rows) == [1, 2]
    assert rows[0]["test_accuracy"] == rows[1]["test_accuracy"]  # the same math in 1 and 2 processes


def test_defaults_tiny(tmp_path, data_root):
    done = _benchmark("defaults", "--tiny", tmp_path=tmp_path, data_root=data_root)
    assert _header(done.stdout, "data set") == (
        "| data set | train rows | test rows | shape | classes | torchlogreg acc | torchlogreg s | stop "
        "| sklearn acc | sklearn s | sklearn converged (iter.) | Δ points | speed-up | meets floor |"
    )
    result = json.loads((tmp_path / "defaults-tiny.json").read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["tiny-npz", "tiny-csv", "tiny-pngs"]
    assert (rows["tiny-csv"]["train_rows"], rows["tiny-csv"]["test_rows"]) == (240, 60)  # convert's 20%
    for row in rows.values():
        assert row["sklearn"]["converged"] and 0.5 < row["sklearn"]["accuracy"] <= 1
        ours = row["torchlogreg"]
        if "error" in ours:  # a refusal or a failure: the CLI's one error line
            assert ours["error"].startswith("torchlogreg train: error: ") and row["floor"] == "no: no model"
        else:
            assert 0 <= ours["accuracy"] <= 1 and ours["seconds"] > 0 and ours["stop"]
            assert row["delta_points"] == 100 * (ours["accuracy"] - row["sklearn"]["accuracy"])
    assert "error" not in rows["tiny-npz"]["torchlogreg"]  # 6,000 rows: trains under any defaults
    assert (tmp_path / "defaults-tiny.md").read_text() in done.stdout


def test_settings_tiny(tmp_path, data_root):
    """Every kind of data and optimizer gets a row per batch size (L-BFGS: the whole set), each with
    its floor and memory."""
    done = _benchmark("settings", "--tiny", tmp_path=tmp_path, data_root=data_root)
    assert "| data | optimizer | batch | µs per sample (wall) | µs per sample (CPU) |" in done.stdout
    (json_file,) = tmp_path.glob("settings-*.json")
    rows = json.loads(json_file.read_text())
    kinds = {"uint8 in memory", "float32 in memory", "uint8 on disk"}
    for kind in kinds:
        for optimizer in ("sgd", "momentum", "adam"):
            batches = [r["batch"] for r in rows if r["kind"] == kind and r["optimizer"] == optimizer]
            assert batches == [10, 335, 2000]
        assert [r["full"] for r in rows if r["kind"] == kind and r["optimizer"] == "lbfgs"] == [True]
    for row in rows:
        assert row["cpu_per_sample_us"] > 0 and row["floor_us"] > 0 and row["peak_mb"] > row["added_mb"] >= 0


def test_estimator_scale_tiny(tmp_path, data_root):
    _benchmark("estimator_scale", "--rows", "1000", "--repeats", "1", tmp_path=tmp_path, data_root=data_root)
    (row,) = json.loads((tmp_path / "estimator_scale.json").read_text())["rows"]
    assert row["rows"] == 1000 and row["speedup"] > 0 and isinstance(row["meets_floor"], bool)
    for name in ("scikit-learn", "torchlogreg"):
        assert 0 < row[name]["objective"] < 2.31 and 0.5 < row[name]["accuracy"] <= 1
    assert "| training rows | estimator | fit s |" in (tmp_path / "estimator_scale.md").read_text()
