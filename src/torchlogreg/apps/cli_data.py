"""`torchlogreg data convert` (a dataset into the on-disk format) and `torchlogreg demo`.

    torchlogreg data convert --from-csv train.csv test.csv --out data/mine
    torchlogreg demo cross-entropy
"""

from __future__ import annotations

import argparse
import sys

from ..base.config import DATASET_NAMES
from ..base.exceptions import ConfigError, listed
from ..base.storage import refuse_existing
from .cli_common import flags_in, path_flag, printable


def cmd_data_convert(args: argparse.Namespace) -> int:
    """Write a dataset in the on-disk (out-of-core) format."""
    from ..data.convert import convert

    if args.from_csv is not None and len(args.from_csv) > 2:
        raise ConfigError(f"--from-csv takes TRAIN_CSV [TEST_CSV], got {len(args.from_csv)} files")
    written = convert(
        args.out,
        dataset=args.dataset,
        data_root=args.data_root,
        download=not args.no_download,
        npz=args.from_npz,
        idx=args.from_idx,
        csv=args.from_csv,
        test_size=args.test_size,
        seed=args.seed,
        folder=args.from_folder,
        label_column=args.label_column,
        image_size=args.image_size,
        class_names=args.class_names.split(",") if args.class_names else None,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
        pictures=args.pictures,
    )
    height, width = written["image_shape"]
    names = written["class_names"]
    shown = listed(names, 10)
    print(
        printable(
            f"wrote {written['train']} train and {written['test']} test images ({height}x{width}, "
            f"{len(names)} classes: {shown}; pictures {written['pictures']}) to {written['out']}"
            + _csv_read(written["csv"])
        )
    )
    for note in written["note"].splitlines():  # (in the library's words: label_column=-1 is a flag here)
        print(printable(flags_in(note)), file=sys.stderr)
    return 0


def _csv_read(read: tuple[dict, ...]) -> str:
    """How the CSVs were read, for convert's line: "; train.csv: label column 'label' (by its name),
    pixels 0..255", the files joined when they were read alike; a guessed label column says how to
    choose another."""
    parts: dict[str, list[str]] = {}
    for file in read:
        hint = "" if file["how"] in ("as asked", "by its name") else "; --label-column picks another"
        parts.setdefault(f"label column {file['label']} ({file['how']}{hint}), {file['pixels']}", []).append(
            file["file"]
        )
    return "".join(f"; {' and '.join(files)}: {how}" for how, files in parts.items())


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demos

    if args.name == "cross-entropy":
        print(demos.format_cross_entropy(demos.cross_entropy_cases()))
    else:
        refuse_existing(args.out, "out", args.overwrite)
        print(printable(f"wrote {demos.linear_vs_logistic(args.out)}"))
    return 0


def data_parser(commands) -> None:
    data = commands.add_parser("data", help="dataset tools: convert to the out-of-core format")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    convert = data_commands.add_parser(
        "convert",
        help="write a dataset as .npy files that training reads from disk a shard at a time",
        description="Reads a built-in dataset (--dataset), an .npz, a folder of IDX files, two CSV files "
        "or a train/test image folder tree, and writes OUT/meta.json, train-images.npy (N x H x W uint8, "
        "rows shuffled), train-labels.npy, test-images.npy and test-labels.npy. Train on it with "
        "--dataset OUT, in one process or under torchrun.",
    )
    _add_sources(convert)
    _add_convert_options(convert)
    convert.set_defaults(handler=cmd_data_convert)


def _add_sources(convert: argparse.ArgumentParser) -> None:
    """Where the dataset comes from: a built-in one (--dataset), or one --from-* source."""
    convert.add_argument(
        "--dataset", default="mnist", help=f"one of {', '.join(DATASET_NAMES)} (default: mnist)"
    )
    source = convert.add_mutually_exclusive_group()
    source.add_argument(
        "--from-npz",
        metavar="FILE",
        help="instead: an .npz with uint8 train_images, test_images (N x H x W), train_labels, test_labels "
        "(or Keras's names: x_train, y_train, x_test, y_test)",
    )
    source.add_argument(
        "--from-idx",
        metavar="DIR",
        help="instead: a folder of MNIST-style IDX files (train-images-..., t10k-/test-labels-..., or .gz)",
    )
    source.add_argument(
        "--from-csv",
        nargs="+",
        metavar="CSV",
        help="instead: TRAIN_CSV [TEST_CSV], a label column and one column per pixel (0..255, or 0..1 "
        "fractions: a file of only 0s and 1s is fractions), header optional, cells quoted or not; "
        "streamed, so larger than memory is fine. One CSV (Kaggle's train.csv): a stratified test split "
        "of --test-size",
    )
    source.add_argument(
        "--from-folder",
        metavar="DIR",
        help="instead: DIR/train/<class>/*.png and DIR/test/<class>/*.png (any image format), read as "
        "grayscale; the class names are the subfolders' names. Without test/, or with DIR/<class>/*.png "
        "alone (torchvision's ImageFolder(DIR)): a stratified test split of --test-size",
    )


def _add_convert_options(convert: argparse.ArgumentParser) -> None:
    """How the source is read (label column, image size, class names, pictures) and where it goes."""
    convert.add_argument(
        "--label-column",
        metavar="COL",
        help="CSV: the label column, by name or index (-1 = last); default: a column named "
        "label/labels/class/target/y, else the one header name unlike the others (digit among "
        "px0..px63), else, without a header, the first",
    )
    convert.add_argument(
        "--image-size",
        metavar="HxW",
        help="CSV: the image shape when the pixels do not make a square; folders: resize every image to it "
        "(--pictures mnist-style: the field each digit is fitted into, default 28x28)",
    )
    convert.add_argument(
        "--class-names",
        metavar="A,B,...",
        help="names of the labels present, in label order, or of labels 0, 1, ... (default: the numbers)",
    )
    convert.add_argument(
        "--pictures",
        metavar="RULE",
        help="how picture files become this dataset's pixels, in training and in predict/serve: as-is "
        "(grayscale, resized) or mnist-style (each digit fitted and centred like MNIST's). Default: as-is "
        "for --from-folder; mnist-style for built-in datasets and for arrays whose images already are "
        "in MNIST's layout (light digits on black, fitted and centred as MNIST's)",
    )
    convert.add_argument("--data-root", metavar="DIR", help="folder holding the datasets")
    convert.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    convert.add_argument(
        "--test-size",
        type=float,
        help="one CSV, or a folder without test/: the fraction held out for test (default: 0.2)",
    )
    convert.add_argument("--seed", type=int, default=0, help="seed of that test split (default: 0)")
    convert.add_argument(
        "--out", type=path_flag, required=True, metavar="DIR", help="dataset folder to write"
    )
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the dataset in --out (a folder holding only a dataset)",
    )


def demo_parser(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="the tutorials' teaching demos",
        description="linear-vs-logistic: the fever example as a figure; "
        "cross-entropy: the loss of confident right and wrong answers.",
    )
    demo.add_argument("name", choices=("linear-vs-logistic", "cross-entropy"), help="which demo")
    demo.add_argument(
        "--out", type=path_flag, default="linear_vs_logistic.png", help="figure file (linear-vs-logistic)"
    )
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.set_defaults(handler=cmd_demo)
