"""Writes the bad-input corpus in this folder (run from the repository root):

    python tests/corpus/make_corpus.py

Each file is one way an input can be wrong; tests/test_reliability.py asserts the error each gets.
"""

from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def digit() -> np.ndarray:
    """A synthetic dark '1' on white paper, 64x64."""
    paper = np.full((64, 64), 255, np.uint8)
    paper[10:54, 28:36] = 20
    return paper


def main() -> None:
    (HERE / "text_named.png").write_text("this is not an image\n")
    (HERE / "empty.png").write_bytes(b"")
    (HERE / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    Image.fromarray(digit()).save(HERE / "truncated.jpg", quality=90)
    blob = (HERE / "truncated.jpg").read_bytes()
    (HERE / "truncated.jpg").write_bytes(blob[: len(blob) // 3])
    Image.new("1", (9000, 9000)).save(HERE / "bomb.png", optimize=True)  # 81 Mpx in a few kB
    frames = [Image.fromarray(digit()), Image.fromarray(255 - digit())]
    frames[0].save(HERE / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(HERE / "blank.png")
    # valid but unusual: composited on white / scaled from 16 bits before use
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 255 - digit()
    Image.fromarray(rgba, "RGBA").save(HERE / "rgba_transparent.png")
    Image.fromarray(digit().astype(np.uint16) * 257).save(HERE / "gray16.png")
    np.save(HERE / "nan.npy", np.full((28, 28), np.nan, np.float32))
    np.save(HERE / "inf.npy", np.full((1, 784), np.inf, np.float32))
    np.save(HERE / "wrong_features.npy", np.zeros((5, 10), np.float32))
    np.save(HERE / "empty.npy", np.zeros((0, 784), np.uint8))
    np.save(HERE / "out_of_range.npy", np.full((28, 28), 3.0, np.float32))
    np.save(HERE / "int_over_255.npy", np.full((28, 28), 300, np.int32))
    np.save(HERE / "strings.npy", np.array(["a"] * 784))
    np.save(HERE / "object_pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (HERE / "not_numpy.npy").write_text("plain text\n")


if __name__ == "__main__":
    main()
