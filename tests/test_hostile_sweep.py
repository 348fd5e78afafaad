"""A sweep of hostile cases across the CLI's surfaces, as a careful hostile user would try them:
input files of every awkward kind given to `predict` with every kind of output, hostile .npz
sources given to `data convert`, damaged run folders given to predict and evaluate, and hostile
output paths given to the writer. Each case must end cleanly: exit 0, or one line on stderr with
exit 1 or 2; never a traceback; nothing partial left (no temporary files, no half-made outputs);
memory within the cap. The sweep reports every unclean case and requires at least 99% clean (the
floor of issue #28); the cases it found were fixed, so it holds 100% today.

    pytest tests/test_hostile_sweep.py -m hostile -s      # prints the count and any unclean case
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from corpus.hostile import deadline, memory_cap, npy_with_header, npz_bomb
from PIL import Image

from torchlogreg.apps.cli import main

pytestmark = pytest.mark.hostile
CORPUS = Path(__file__).resolve().parent / "corpus"


def _outcome(argv: list[str], capsys, watched: list[Path]) -> str | None:
    """Run the CLI on `argv`: None when it ended cleanly, else what was wrong."""
    try:
        with deadline(60), memory_cap(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse refusing a flag: one line, exit 2
                code = exit_.code
    except BaseException as error:  # noqa: BLE001 - any escape is the finding
        capsys.readouterr()
        return f"raised {type(error).__name__}: {str(error)[:200]}"
    shown = [w for w in caught if issubclass(w.category, (UserWarning, RuntimeWarning))]
    if shown:  # a user would see these on stderr, with a source path
        capsys.readouterr()
        return f"warned {shown[0].category.__name__}: {str(shown[0].message)[:200]}"
    err = capsys.readouterr().err
    if "Traceback" in err:
        return f"a traceback on stderr: {err[-300:]}"
    if code not in (0, 1, 2):
        return f"exit {code}"
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("skipped ")]
    if code and (len(lines) != 1 or ": error: " not in lines[0]):  # --skip-bad's notes aside
        return f"exit {code} with {len(lines)} lines on stderr: {err[:300]!r}"
    for folder in watched:
        leftovers = [p.name for p in folder.glob(".*") if p.name.endswith((".tmp", ".converting", ".lock"))]
        if leftovers:
            return f"left {leftovers} in {folder}"
    return None


def _outcome_with_fresh_out(argv: list[str], capsys, tmp_path: Path) -> str | None:
    """_outcome of a command writing under tmp_path / "out", removed first; leftovers are looked for
    in tmp_path and in out."""
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    return _outcome(argv, capsys, [tmp_path, tmp_path / "out"])


# --- predict: every awkward input file with every kind of output ----------------------------------


def _inputs(folder: Path) -> dict[str, Path]:
    """Hostile input files, by what they are."""
    folder.mkdir()
    made: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        made[name] = folder / name

    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    buffer = io.BytesIO()
    np.save(buffer, digit[None])
    put("good.npy", buffer.getvalue())
    put("header-length.npy", b"\x93NUMPY\x02\x00" + (1_900_000_000).to_bytes(4, "little") + b" " * 64)
    put("huge-shape.npy", npy_with_header((100_000_000, 784)))
    put("negative-shape.npy", npy_with_header((-1, 784)))
    put("object.npy", npy_with_header((1, 784), descr="|O"))
    put("truncated.npy", npy_with_header((4, 784), data=bytes(100)))
    put("float-nan.npy", npy_with_header((1, 784), descr="<f4", data=np.full(784, np.nan, "<f4").tobytes()))
    put("empty.csv", b"")
    put("header-only.csv", b",".join(b"p%d" % i for i in range(784)) + b"\n")
    put("one-column.csv", b"1\n2\n")
    put("binary.csv", bytes(range(256)) * 8)
    put("mixed-scale.csv", b",".join([b"0.5"] * 784) + b"\n" + b",".join([b"200"] * 784) + b"\n")
    put("nan.csv", b",".join([b"nan"] * 784) + b"\n")
    put("long-line.csv", b"1," * 2_000_000)
    put("zip-not-npz.npz", _zip({"readme.txt": b"hello"}))
    put(
        "many-members.npz", _zip({f"a{i}.npy": npy_with_header((1, 784), data=bytes(784)) for i in range(40)})
    )
    with open(folder / "bomb.npz", "wb") as bomb:
        npz_bomb(bomb, 400_000)
    made["bomb.npz"] = folder / "bomb.npz"
    put("text.png", b"not a picture at all")
    put("truncated.png", _png(digit)[:60])
    for name in ("bomb.png", "animated.gif", "blank.png", "corrupt.png", "truncated.jpg", "gray16.png"):
        shutil.copy(CORPUS / name, folder / name)
        made[name] = folder / name
    put("\udcffsurrogate-name.npy", buffer.getvalue())
    os.mkfifo(folder / "fifo.csv")
    made["fifo.csv"] = folder / "fifo.csv"
    os.mkfifo(folder / "fifo.png")
    made["fifo.png"] = folder / "fifo.png"
    (folder / "folder.npy").mkdir()
    made["folder.npy"] = folder / "folder.npy"
    os.symlink("/dev/zero", folder / "zero.npy")
    made["zero.npy"] = folder / "zero.npy"
    made["missing.npy"] = folder / "missing.npy"
    made["very-long-name"] = folder / ("n" * 5000 + ".npy")
    made["dev-null"] = Path("/dev/null")
    return made


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _outputs(folder: Path) -> dict[str, list[str]]:
    """Kinds of --output, by what they are."""
    (folder / "a-file").write_text("")
    return {
        "stdout": [],
        "stdout json": ["--json"],
        "csv": ["--output", str(folder / "out" / "p.csv")],
        "jsonl": ["--output", str(folder / "out" / "p.jsonl")],
        "under a file": ["--output", str(folder / "a-file" / "p.csv")],
        "in /proc": ["--output", "/proc/torchlogreg-sweep.csv"],
        "name too long": ["--output", str(folder / ("n" * 5000 + ".csv"))],
        "empty name": ["--output", ""],
        "a folder": ["--output", str(folder)],
    }


FLAGS = {"plain": [], "top-k 1": ["--top-k", "1"], "skip-bad": ["--skip-bad"]}


def _run_folder(tmp_path_factory) -> Path:
    from conftest import synthetic_data

    from torchlogreg import TrainConfig, train
    from torchlogreg.runfolder.checkpoints import save_run

    result = train(TrainConfig(batch_size=16, epochs=1, device="cpu", val_size=60), synthetic_data(side=28))
    return save_run(result, tmp_path_factory.mktemp("sweep") / "run")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _run_folder(tmp_path_factory)


def test_predict_sweep(run_dir, tmp_path, capsys):
    inputs, outputs = _inputs(tmp_path / "in"), _outputs(tmp_path)
    unclean, count = [], 0
    for (name, path), (kind, output), (flag, extra) in itertools.product(
        inputs.items(), outputs.items(), FLAGS.items()
    ):
        argv = ["predict", str(run_dir), str(path), *output, *extra]
        problem = _outcome_with_fresh_out(argv, capsys, tmp_path)
        count += 1
        if problem:
            unclean.append(f"predict {name} -> {kind} ({flag}): {problem}")
    _report("predict", count, unclean)


# --- data convert: hostile .npz sources to every kind of --out -----------------------------------


def _npz_sources(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    images = np.zeros((12, 8, 8), np.uint8)
    labels = np.arange(12) % 3

    def put(name: str, **arrays) -> None:
        np.savez(folder / name, **arrays)

    put("good.npz", train_images=images, train_labels=labels, test_images=images[:6], test_labels=labels[:6])
    put("missing-key.npz", train_images=images, train_labels=labels)
    put(
        "float-images.npz",
        train_images=images.astype(float),
        train_labels=labels,
        test_images=images,
        test_labels=labels,
    )
    put(
        "labels-2-63.npz",
        train_images=images,
        train_labels=np.full(12, 2**63 - 1),
        test_images=images,
        test_labels=labels,
    )
    put(
        "negative-labels.npz",
        train_images=images,
        train_labels=-labels - 1,
        test_images=images,
        test_labels=labels,
    )
    put(
        "count-mismatch.npz",
        train_images=images,
        train_labels=labels[:5],
        test_images=images,
        test_labels=labels,
    )
    put(
        "one-class.npz",
        train_images=images,
        train_labels=np.zeros(12, int),
        test_images=images,
        test_labels=np.zeros(12, int),
    )
    (folder / "bomb.npz").write_bytes(
        _zip(
            {
                "train_images.npy": npy_with_header((6_000_000, 28, 28)),
                "train_labels.npy": npy_with_header((2,)),
                "test_images.npy": npy_with_header((2, 28, 28)),
                "test_labels.npy": npy_with_header((2,)),
            }
        )
    )
    (folder / "object.npz").write_bytes(_zip({"train_images.npy": npy_with_header((1,), descr="|O")}))
    (folder / "not-a-zip.npz").write_bytes(b"garbage")
    os.mkfifo(folder / "fifo.npz")
    (folder / "dir.npz").mkdir()
    return {p.name: p for p in folder.iterdir()} | {"missing.npz": folder / "missing.npz"}


def test_convert_sweep(tmp_path, capsys):
    sources = _npz_sources(tmp_path / "src")
    (tmp_path / "a-file").write_text("")
    outs = {
        "new folder": tmp_path / "out" / "ds",
        "under a file": tmp_path / "a-file" / "ds",
        "in /proc": Path("/proc/torchlogreg-sweep"),
        "name too long": tmp_path / ("n" * 5000),
        "empty name": Path(""),
    }
    class_names = {
        "none": [],
        "names": ["--class-names", "a,b,c"],
        "duplicates": ["--class-names", "a,a,b"],
        "surrogate": ["--class-names", "\udcffx,b,c"],
        "too few": ["--class-names", "a"],
    }
    unclean, count = [], 0
    for (name, source), (kind, out), (names, extra) in itertools.product(
        sources.items(), outs.items(), class_names.items()
    ):
        argv = ["data", "convert", "--from-npz", str(source), "--out", str(out) if str(out) != "." else ""]
        problem = _outcome_with_fresh_out([*argv, *extra], capsys, tmp_path)
        count += 1
        if problem:
            unclean.append(f"convert {name} -> {kind} ({names}): {problem}")
    _report("data convert", count, unclean)


# --- run folders from strangers ------------------------------------------------------------------


def _damage(run: Path, how: str) -> None:
    meta_path = run / "model.json"
    meta = json.loads(meta_path.read_text())

    def rewrite_weights(change) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(run / "model.safetensors")
        change(tensors)
        save_file(tensors, run / "model.safetensors")
        meta["weights_sha256"] = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()

    if how == "unknown key":
        meta["extra"] = 1
    elif how == "surrogate class":
        meta["class_names"][0] = "\ud800x"
    elif how == "duplicate classes":
        meta["class_names"][1] = meta["class_names"][0]
    elif how == "201-character class":
        meta["class_names"][0] = "a" * 201
    elif how == "dollar class":
        meta["class_names"][0] = "$\\frac{"
    elif how == "nan weights":
        rewrite_weights(lambda t: t["linear.weight"].fill_(float("nan")))
    elif how == "changed weights":
        (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    elif how == "weights link":
        (run / "model.safetensors").unlink()
        os.symlink("/dev/zero", run / "model.safetensors")
    elif how == "fifo model.json":
        meta_path.unlink()
        os.mkfifo(meta_path)
        return
    elif how == "huge metrics.json":
        (run / "metrics.json").write_bytes(b" " * (5 << 20))
    elif how == "input shape 2048":
        meta["input_shape"] = [2048, 2048]
    elif how == "string threshold":
        meta["threshold"] = "0.5"
    elif how == "deep config":
        meta["config"] = json.loads("[" * 50 + "]" * 50)
    elif how == "data root elsewhere":
        meta["config"]["data_root"] = str(run.parent / "elsewhere")
    elif how == "no weights":
        (run / "model.safetensors").unlink()
    elif how == "pickle weights":
        (run / "model.safetensors").write_bytes(b"\x80\x04K\x01.")
    meta_path.write_text(json.dumps(meta))


DAMAGE = [
    "unknown key",
    "surrogate class",
    "duplicate classes",
    "201-character class",
    "dollar class",
    "nan weights",
    "changed weights",
    "weights link",
    "fifo model.json",
    "huge metrics.json",
    "input shape 2048",
    "string threshold",
    "deep config",
    "data root elsewhere",
    "no weights",
    "pickle weights",
    "none",
]


def test_run_folder_sweep(run_dir, tmp_path, data_root, capsys, monkeypatch):
    monkeypatch.setenv("TORCHLOGREG_DATA", str(tmp_path / "no-data"))  # evaluate must not download
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 28, 28), np.uint8))
    commands = {
        "predict": lambda run: ["predict", str(run), str(good)],
        "predict json": lambda run: ["predict", str(run), str(good), "--json"],
        "predict csv": lambda run: [
            "predict",
            str(run),
            str(good),
            "--output",
            str(tmp_path / "o" / "p.csv"),
        ],
        "evaluate": lambda run: ["evaluate", str(run), "--no-download"],
    }
    unclean, count = [], 0
    for how, (command, argv) in itertools.product(DAMAGE, commands.items()):
        run = tmp_path / "runs" / f"{len(how)}-{count}"
        shutil.copytree(run_dir, run)
        _damage(run, how)
        problem = _outcome(argv(run), capsys, [run])
        if how == "data root elsewhere" and (tmp_path / "runs" / "elsewhere").exists():
            problem = "the run's data_root was created"
        count += 1
        if problem:
            unclean.append(f"{command} on a run with {how}: {problem}")
    _report("run folders", count, unclean)


# --- the writer on hostile paths ---------------------------------------------------------------


def test_writer_sweep(tmp_path):
    from torchlogreg import OutputError
    from torchlogreg.base.storage import atomic_write_bytes, make_folder

    (tmp_path / "file").write_text("")
    os.symlink(tmp_path / "missing-target", tmp_path / "dangling")
    parents = [
        tmp_path,
        tmp_path / "file",
        tmp_path / "new" / "deeper",
        Path("/proc"),
        Path("/dev/null"),
        tmp_path / "dangling",
        Path("/sys/kernel"),
        tmp_path / ("p" * 300),
    ]
    names = ["x.csv", "n" * 300, "x" * 255, ".hidden", "sp ace.json", "\udcff.bin", "a\nb.csv", "report"]
    unclean, count = [], 0
    for parent, name in itertools.product(parents, names):
        for write in (lambda p: atomic_write_bytes(p, b"data"), make_folder):
            count += 1
            try:
                write(parent / name)
            except OutputError as error:
                if "\n" in str(error).replace("a\nb", ""):
                    unclean.append(f"{parent}/{name}: message of several lines")
            except BaseException as error:  # noqa: BLE001
                unclean.append(f"{str(parent)[:40]}/{name[:20]}: {type(error).__name__}: {error}"[:200])
            leftovers = [p.name for p in tmp_path.rglob(".*.tmp")] if parent.is_relative_to(tmp_path) else []
            if leftovers:
                unclean.append(f"{parent}/{name}: left {leftovers}")
    _report("writer", count, unclean)


def _report(surface: str, count: int, unclean: list[str]) -> None:
    clean = 1 - len(unclean) / count
    print(f"\n{surface}: {count} hostile cases, {count - len(unclean)} clean ({clean:.1%})")
    for line in unclean:
        print("  unclean:", line)
    assert clean >= 0.99, "\n".join(unclean[:20])
