"""Datasets in other formats written as out-of-core dataset folders (see data/ondisk.py).

    torchlogreg data convert --dataset fashion-mnist --out data/fashion
    torchlogreg data convert --from-idx raw/ --out data/mine      # train-*, t10k-* or test-* (.gz too)
    torchlogreg data convert --from-npz arrays.npz --out data/mine
    torchlogreg data convert --from-csv train.csv test.csv --out data/mine   # label + one column per pixel
    torchlogreg data convert --from-folder photos/ --out data/mine  # photos/{train,test}/<class>/*.png
    torchlogreg data convert --from-folder photos/ --pictures mnist-style --out data/mine

Classes are the labels the training data holds, in sorted order: labels {3, 5} make a binary
dataset of classes '3' and '5'. meta.json records how a picture file becomes the dataset's pixels
(images.PICTURE_RULES): an image folder is stored as it is ("as-is": grayscale, one size), or, with
--pictures mnist-style, each picture is fitted like an MNIST digit; the built-in datasets, and
arrays whose images already are in MNIST's layout (light digits on black, fitted and centred as
MNIST's: `digits.in_layout`), are "mnist-style". Runs copy the rule,
and predict and serve apply it to picture files, so a model sees the pixels it was trained on.

Each source is read by its format's one reader (data/sources.py); CSV files and image folders stream
through scratch files in the output folder, so converting needs memory for one block of rows, not
for the dataset. How a CSV is read (its label column, and its pixel scale: a file of only 0s and
1s is fractions, see data/csvfiles.py) is decided before anything is written and returned, for
the command's line; a test CSV must have the training CSV's pixel columns and a label column.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from ..base.datasets import DATASET_META, is_dataset_folder
from ..base.exceptions import ConfigError, DataError, listed
from ..base.storage import hidden_name, output_lock, refuse_existing, refuse_non_folder
from .classnames import class_names_problem
from .csvfiles import csv_header, describe_csv
from .csvlayout import CsvLayout
from .csvscale import BYTES, near_black
from .digits import in_layout
from .images import AS_IS, MNIST_STYLE, check_pictures, spread_sample
from .inmemory import Split, load_splits
from .ondisk import DATASET_FILES, read_meta, write_dataset
from .readers import labels_problem
from .sources import read_csv, read_idx_folder, read_image_folders, read_npz

SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
IN_LAYOUT_SHARE = 0.9  # arrays are mnist-style when this share of them is in MNIST's layout (MNIST: all)
OS_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")  # what file browsers leave in any folder
TEST_SIZE = 0.2  # the share of rows a source without a test set holds out for one (stratified)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'HxW' -> (height, width); None stays None."""
    if text is None:
        return None
    match = SIZE_PATTERN.match(text.strip())
    if not match or 0 in (int(match[1]), int(match[2])):
        raise ConfigError(
            f"image_size must look like 28x28 (height x width), got {text!r}", parameter="image_size"
        )
    return int(match[1]), int(match[2])


def _check_label_range(labels: list[torch.Tensor], where: str) -> None:
    """Some labels, all class numbers (integers in 0..MAX_LABEL, readers.labels_problem)."""
    if not any(len(t) for t in labels):
        raise DataError(f"{where}: no samples")
    if problem := labels_problem(torch.cat(labels).numpy()):
        raise DataError(f"{where}: {problem}")


def _names_for(present: list[int], class_names: list[str] | None, where: str) -> tuple[str, ...]:
    """Names of the labels `present` (sorted): the labels themselves ('3', '5'), or `class_names`,
    which list either one name per label present, in label order, or one per label 0..max."""
    if class_names is None:
        return tuple(str(label) for label in present)
    if len(class_names) == len(present):
        return tuple(class_names)
    if len(class_names) > present[-1]:
        return tuple(class_names[label] for label in present)
    shown = listed(map(str, present), 10)
    valid = f"{len(present)} names, one per label in that order"
    if present[-1] + 1 != len(present):
        valid += f", or {present[-1] + 1}, one per label 0..{present[-1]}"
    raise ConfigError(
        f"class_names lists {len(class_names)} names but {where} has {len(present)} labels ({shown}); "
        f"give {valid}",
        parameter="class_names",
    )


def present_classes(
    train: Split, test: Split, class_names: list[str] | None, where: str
) -> tuple[Split, Split, tuple[str, ...]]:
    """The splits relabelled 0..k-1 by the k labels the training data holds, in sorted order, and
    their names: labels {3, 5} give a two-class (binary) dataset named '3' and '5', not six classes
    four of which are empty. A test label the training data lacks is refused: no model could learn it."""
    _check_label_range([train.labels, test.labels], where)
    present = torch.unique(train.labels)
    unknown = torch.unique(test.labels[~torch.isin(test.labels, present)])
    if len(unknown):  # named as class_names names them, where it has one name per label 0..max
        named = class_names is not None and len(class_names) > max(int(unknown[-1]), int(present[-1]))
        shown = lambda labels: ", ".join(  # noqa: E731
            [repr(class_names[v]) if named else str(v) for v in labels[:10].tolist()]
            + ["..."] * (len(labels) > 10)
        )
        raise DataError(
            f"{where}: test labels {shown(unknown)} never occur in the training data (labels "
            f"{shown(present)}); every test class needs training samples"
        )
    names = _names_for(present.tolist(), class_names, where)
    lookup = torch.full((int(present[-1]) + 1,), -1, dtype=torch.int64)
    lookup[present] = torch.arange(len(present))
    return Split(train.images, lookup[train.labels]), Split(test.images, lookup[test.labels]), names


def _in_mnist_layout(images: torch.Tensor) -> bool:
    """Whether images are already what the mnist-style rule makes of a picture (digits.in_layout:
    light ink on black, fitted and centred as MNIST's digits): at least IN_LAYOUT_SHARE of up to
    images.PICTURE_SAMPLE evenly spaced ones (MNIST's: all). Only then may predict fit pictures so and
    still see what training saw: MNIST padded to 32x32 or resized to 16x16, two digits side by side,
    digits centred by their box, on a grey background, all pass a looser test and were refitted."""
    rows = spread_sample(images)
    if not len(rows):
        return False
    shape = tuple(rows.shape[1:])
    fitted = sum(in_layout(row.numpy() / 255.0, shape) for row in rows)
    return fitted >= IN_LAYOUT_SHARE * len(rows)


def _pictures_rule(train_images: torch.Tensor, options: dict) -> str:
    """How picture files become this dataset's pixels (see the module's docstring): the rule given,
    else as-is for an image folder, mnist-style for a built-in dataset, and for arrays mnist-style
    when their images already are in MNIST's layout, else as-is (a picture of the model's own shape
    then reaches it as the training pixels were)."""
    if options["pictures"] is not None:
        return options["pictures"]
    if options["folder"] is not None:
        return AS_IS
    if all(options[key] is None for key in ("npz", "idx", "csv")):
        return MNIST_STYLE
    return MNIST_STYLE if _in_mnist_layout(train_images) else AS_IS


# --- the conversion --------------------------------------------------------------------------
def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an earlier dataset folder, and that only when overwriting: the
    whole folder is replaced, so one holding anything else (the user's files, the very source being
    converted) is refused, overwrite or not."""
    refuse_non_folder(out, "out")
    held = [path.name for path in out.iterdir() if path.name not in OS_FILES] if out.is_dir() else []
    if not held:
        return
    others = sorted(name for name in held if name not in DATASET_FILES)
    if not others and not is_dataset_folder(out):
        raise ConfigError(
            f"out {out} holds part of a dataset (no {DATASET_META}): not one to replace; remove it, or give "
            "out=A_NEW_OR_EMPTY_FOLDER",
            parameter="out",
        )
    if others:
        named = listed((ascii(name)[1:-1] for name in others), 3)
        raise ConfigError(
            f"out {out} holds other files ({named}), which a dataset would replace; "
            "give out=A_NEW_OR_EMPTY_FOLDER",
            parameter="out",
        )
    refuse_existing(out, "out", overwrite, holds="a dataset")


def stratified_split(split: Split, test_size: float, seed: int) -> tuple[Split, Split]:
    """(train, test): round(test_size x count) rows of each class go to test, chosen by `seed`."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be a fraction in (0, 1), got {test_size}", parameter="test_size")
    generator = torch.Generator().manual_seed(seed)
    test_rows = []
    for label in torch.unique(split.labels):
        members = torch.nonzero(split.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        test_rows.append(members[: round(test_size * len(members))])
    test_index = torch.cat(test_rows).sort().values
    if not len(test_index) or len(test_index) == len(split):
        largest = int(torch.unique(split.labels, return_counts=True)[1].max())
        if largest < 2:
            raise ConfigError(
                f"test_size cannot split {len(split)} rows of one per class; give a test set as well",
                parameter="test_size",
            )
        raise ConfigError(
            f"test_size {test_size} leaves {len(test_index)} of {len(split)} rows for test; rounded per "
            f"class, a fraction strictly between {0.5 / largest:.3g} and {1 - 0.5 / largest:.3g} leaves "
            "rows for both train and test",
            parameter="test_size",
        )
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[test_index] = False
    return split.take(torch.nonzero(keep).flatten()), split.take(test_index)


def _read_source(scratch: Path, options: dict) -> tuple[Split, Split, tuple[str, ...] | None]:
    """(train, test, class names or None) from the one source `options` name (convert's keyword
    arguments), else the built-in dataset."""
    folder, npz, idx, csv = (options[k] for k in ("folder", "npz", "idx", "csv"))
    size = parse_size(options["image_size"])
    if folder is not None:
        rule = options["pictures"] or AS_IS
        train, test, names = read_image_folders(folder, scratch, size, options["progress"], rule)
        if test is None:  # no test/ folder: split a test set off, as off one CSV
            train, test = stratified_split(train, options["test_size"], options["seed"])
        return train, test, names
    if npz is not None:
        return (*read_npz(npz), None)
    if idx is not None:
        return (*read_idx_folder(idx), None)
    if csv is not None:  # each file as _check_csvs found it: its label column, pixel scale, named labels
        read = zip(("train", "test"), csv, options["csv_columns"], strict=False)  # (train alone: one)
        names: dict[str, int] = {}  # class names, where the labels are names
        train, *test = [read_csv(path, scratch / f"{name}.raw", label, size, scale, names, named)
                        for name, path, (label, scale, named) in read]  # fmt: skip
        if not test:  # one labelled CSV (Kaggle's train.csv): split off a test set
            train, test = stratified_split(train, options["test_size"], options["seed"])
        else:
            test = test[0]
        if not names:
            return train, test, None
        return _by_name(train, test, names, " and ".join(map(str, csv)))
    return load_splits(options["dataset"], options["data_root"], download=options["download"])


def _by_name(train: Split, test: Split, names: dict[str, int], where: str) -> tuple[Split, Split, tuple]:
    """`present_classes` of CSV labels that are class names, numbered in `names` by first
    appearance: renumbered in the names' sorted order first, so the classes are the names the
    training rows hold, sorted (as a picture folder's subfolders, and scikit-learn's classes_)."""
    ordered = sorted(names)
    renumber = torch.tensor([ordered.index(name) for name in names], dtype=torch.int64)
    train, test = (Split(split.images, renumber[split.labels]) for split in (train, test))
    return present_classes(train, test, ordered, where)


def _check_splits(train: Split, test: Split, names: tuple[str, ...], csv_read: tuple[dict, ...] = ()) -> None:
    """At least two classes to learn (from a CSV whose label column was found by a rule, the line
    says which column, and how to pick another), and one image size in both splits."""
    present = torch.unique(train.labels)
    if len(present) < 2:
        found = next((read for read in csv_read if read["how"] != "as asked"), None)
        hint = "" if found is None else (
            f" ({found['file']}: column {found['label']} was taken as the label, {found['how']}; "
            "--label-column picks another, -1 the last)"
        )  # fmt: skip
        raise DataError(
            f"the training data holds only class {names[int(present[0])] if len(present) else 'none'}"
            f"{hint}; a classifier needs at least two"
        )
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"train images are {tuple(train.images.shape[1:])} but test images "
            f"{tuple(test.images.shape[1:])}; they must match"
        )


def _first_column_note(train: Split, csv_read: tuple[dict, ...]) -> str:
    """A line where a CSV without a header had its first column taken as the label, by that rule
    alone, and its last column holds fewer values (a label column's look): which is the label only the
    user knows (label-last shapes had made "66 classes" of a pixel's values and trained to 4% with no
    word; binarized label-first digits look so too, so it is a note, not a refusal)."""
    if not csv_read or csv_read[0]["how"] != "the first: no header":
        return ""
    classes = len(torch.unique(train.labels))
    last = len(torch.unique(train.images.reshape(len(train.images), -1)[:, -1]))
    if not 2 <= last < classes:
        return ""
    return (
        f"note: {csv_read[0]['file']}: column 0, taken as the label (no header), gives {classes} classes; "
        f"the last column holds {last} values: if it is the label, convert again with label_column=-1"
    )


def _check_options(options: dict) -> None:
    """Refuse convert's keyword arguments (`options`) that do not go together, before anything is read."""
    if sum(options[source] is not None for source in ("npz", "idx", "csv", "folder")) > 1:
        raise ConfigError(
            "give one source: npz=FILE, idx=FOLDER, csv=FILES or folder=FOLDER", parameter="npz"
        )
    if options["folder"] is not None and options["class_names"] is not None:
        raise ConfigError(
            "class_names cannot go with folder: an image folder's class names are its subfolders' names",
            parameter="class_names",
        )
    if options["pictures"] is not None:
        check_pictures(options["pictures"], "pictures", ConfigError)
    parse_size(options["image_size"])
    if options["class_names"] is not None and (problem := class_names_problem(options["class_names"])):
        raise ConfigError(f"class_names: {problem}", parameter="class_names")
    if options["test_size"] is not None and _has_test_set(options):
        raise ConfigError(
            "test_size splits a test set off a source without one (one CSV, or a folder without test/); "
            "this one has its own",
            parameter="test_size",
        )
    options["test_size"] = TEST_SIZE if options["test_size"] is None else options["test_size"]


def _has_test_set(options: dict) -> bool:
    """Whether the source `options` name holds its own test split (test_size then has nothing to do)."""
    if options["csv"] is not None:
        return len(options["csv"]) > 1
    if options["folder"] is not None:
        root = Path(options["folder"])
        return (root / "test").exists()
    return True  # npz, idx, a built-in dataset


def _csv_read(path, layout: CsvLayout, pixels: str) -> dict:
    """How one CSV is read, for the command's line: {"file", "label", "how", "pixels"} (the label
    column, by name or index, how it was found, and how the pixels are read)."""
    label = repr(layout.fields[layout.label]) if layout.header else str(layout.label)
    return {"file": str(path), "label": label, "how": layout.label_rule, "pixels": pixels}


def _same_label(train: CsvLayout, test_header: list[str] | None) -> str | None:
    """The test CSV's label column where none was asked for: the training file's, by its name where
    the test file's header holds it, by its place where the test file has no header (None: found by
    the test file's own header)."""
    if test_header is None:
        return str(train.label)
    name = train.fields[train.label] if train.header else None
    return name if name in test_header else None


def headerless_label(layout: CsvLayout) -> int | None:
    """Where a training CSV holds its label, for predict to read a file without a header alike: -1 for
    the last column, else its index (None: the first, the rule's own; recorded whether or not the
    training file had a header, as the file predicted may have none)."""
    if layout.label is None or layout.label == 0:
        return None
    return -1 if layout.label == layout.width - 1 else layout.label


def _check_csvs(
    csv: tuple | None, label_column: str | None
) -> tuple[tuple[dict, ...], list[tuple], int | None]:
    """How each CSV of `csv` (train[, test]) will be read, decided before anything is written: the
    command's lines (_csv_read), for `read_csv` each file's (label column, pixel scale), and where a
    training file without a header holds its label (`headerless_label`, recorded in the dataset). A test
    CSV must hold the training CSV's pixel columns and its label column: the one asked for, else the
    training file's (by its header name where both files have a header, else by its place), never one
    found by another rule (a test file without a header took its first pixel as the label)."""
    if csv is None:
        return (), [], None
    train, scale, named = describe_csv(csv[0], label_column=label_column)
    read, columns = [_csv_read(csv[0], train, scale.describe())], [(label_column, scale, named)]
    if len(csv) > 1:
        test_label = label_column if label_column is not None else _same_label(train, csv_header(csv[1]))
        test, scale, _ = describe_csv(csv[1], train.n_pixels, test_label, named)  # (as the training file's)
        if test.label is None:
            raise DataError(
                f"{csv[1]}: no label column ({test.width} columns, as many as the pixels of {csv[0]}); a "
                f"test CSV needs its labels, in a column as {csv[0]} has them (column {read[0]['label']}), "
                "or give the training CSV alone to split a test set off it"
            )
        _same_pixels(train, test, csv)
        read.append(_csv_read(csv[1], test, scale.describe()))
        if label_column is None and test_label is not None:
            read[-1]["how"] = f"as {Path(csv[0]).name}'s"
        columns.append((test_label, scale, named))
    return tuple(read), columns, headerless_label(train)


def _same_pixels(train: CsvLayout, test: CsvLayout, csv: tuple) -> None:
    """Where both CSVs name their columns, the test file's pixel columns are the training file's, in
    the same order: pixels are read by their place, and a test file of reordered columns (a
    DataFrame's columns sorted another way) would be other pictures."""
    if not (train.header and test.header):
        return
    pixels = [[f for i, f in enumerate(layout.fields) if i != layout.label] for layout in (train, test)]
    for place, (ours, theirs) in enumerate(zip(*pixels, strict=True)):
        if ours != theirs:
            raise DataError(
                f"{csv[1]}: pixel column {place} is {theirs!r} where {csv[0]} has {ours!r}; a test CSV "
                "holds the training file's pixel columns in the same order"
            )


def _write_folder(folder: Path, scratch: Path, options: dict) -> tuple[int, str]:
    """The source `options` names read (through `scratch`) and written as a dataset folder; returns
    the largest pixel of a sample of the training images, and a note on a CSV's label column (or "")."""
    train, test, names = _read_source(scratch, options)
    class_names = options["class_names"]
    npz, idx, csv, dataset = (options[key] for key in ("npz", "idx", "csv", "dataset"))
    source = str(options["folder"] or npz or idx or (csv and " and ".join(map(str, csv))) or dataset)
    if names is None or class_names is not None:
        train, test, names = present_classes(train, test, class_names, source)
    if problem := class_names_problem(list(names)):  # a folder's subfolder names, or a CSV's
        raise DataError(f"{source}: {problem}")
    _check_splits(train, test, names, options["csv_read"])
    pictures = _pictures_rule(train.images, options)
    write_dataset(folder, train, test, names, pictures=pictures, csv_label=options["csv_label"])
    largest = int(spread_sample(train.images).max())  # (as the picture rule, from a sample: no second pass)
    return largest, _first_column_note(train, options["csv_read"])


def _swap_in(staging: Path, out: Path) -> None:
    """`staging` becomes `out`: an old `out` is renamed aside first and removed only after, so at
    every moment one complete dataset is there (or, after a crash, beside it as `.NAME.replaced`)."""
    aside = out.parent / f".{out.name}.replaced"
    shutil.rmtree(aside, ignore_errors=True)
    if out.exists():
        out.rename(aside)
    try:
        staging.rename(out)
    except BaseException:
        if aside.exists():
            aside.rename(out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def convert(
    out: str | os.PathLike,
    *,
    dataset: str = "mnist",
    data_root: str | None = None,
    download: bool = True,
    npz: str | os.PathLike | None = None,
    idx: str | os.PathLike | None = None,
    csv: tuple[str | os.PathLike, ...] | None = None,
    folder: str | os.PathLike | None = None,
    label_column: str | None = None,
    image_size: str | None = None,
    class_names: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    test_size: float | None = None,
    seed: int = 0,
    pictures: str | None = None,
) -> dict:
    """Write one source (npz, idx, csv = (train, test), folder, else the built-in `dataset`) to `out`.
    A single CSV, csv = (train,), or a folder without test/ gives a stratified test split of
    `test_size` (None: TEST_SIZE), chosen by `seed`; test_size with a source of its own test split is
    refused (it had been ignored).
    Classes are the labels present in the training data, sorted; `class_names` name them (one name
    per label present, or one per label 0..max). `pictures` (images.PICTURE_RULES) is how picture
    files become the dataset's pixels; None: the source's own (see `_pictures_rule`).

    Returns {"out", "train", "test", "class_names", "image_shape", "pictures"} of what was written,
    "csv": for each CSV read, {"file", "label", "how", "pixels"} (see `_csv_read`), and "note": a
    line on near-black training images (`_dim_note`), or "".
    """
    options = dict(locals())  # the keyword arguments, as _read_source reads them
    out = Path(out)
    _check_options(options)  # nothing is written for options that do not go together
    csv_read, options["csv_columns"], options["csv_label"] = _check_csvs(csv, label_column)
    options["csv_read"] = csv_read
    if class_names is not None and any(named for _, _, named in options["csv_columns"]):
        raise ConfigError(
            f"class_names: {csv[0]}'s labels are class names already (the classes are those names, "
            "sorted); leave class_names out",
            parameter="class_names",
        )
    with output_lock(out):  # one process writes `out` (and its staging folder) at a time
        check_output(out, overwrite)
        # Written beside `out` and renamed into place: a failed conversion leaves `out` as it was.
        staging = out.parent / hidden_name(out.name, ".converting")
        shutil.rmtree(staging, ignore_errors=True)
        scratch = staging / "scratch"
        scratch.mkdir(parents=True)
        try:
            largest, label_note = _write_folder(staging, scratch, options)
            shutil.rmtree(scratch)  # the splits read from it are gone with _write_folder's frame
            _swap_in(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    meta = read_meta(out)
    return {
        "out": out,
        "train": meta["splits"]["train"],
        "test": meta["splits"]["test"],
        "class_names": tuple(meta["class_names"]),
        "image_shape": tuple(meta["image_shape"]),
        "pictures": meta["pictures"],
        "csv": csv_read,
        "note": "\n".join(n for n in (label_note, _dim_note(largest, options["csv_columns"])) if n),
    }


def _dim_note(largest: int, csv_columns: list[tuple]) -> str:
    """A line for training pixels that stay near black (`csvscale.near_black`), else "" (and for
    a CSV of fractions, whose pixels are what they say)."""
    if any(scale.scale != BYTES for _, scale, _ in csv_columns):
        return ""
    note = near_black(largest)
    return f"note: the training {note}; then convert again" if note else ""
