"""A CSV's pixel scale (csvfiles.py's rules): 0..255, or fractions in [0, 1] throughout, settled by the
first row only one scale fits; the checks that hold each block's rows to it, and the note for 0..255
pixels that stay near black.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PIXEL_RANGE = "0..255 (or fractions in [0, 1])"
FRACTIONS, BYTES = "fractions in [0, 1]", "values 0..255"  # the two pixel scales
DIM_PIXEL = 16  # a 0..255 file whose pixels never pass this is noted as near-black (0..16: sklearn's digits)
ONLY_0_1 = "only 0s and 1s, read as fractions (1 = full intensity)"  # how a file of 0s and 1s is read


def near_black(largest: float) -> str:
    """The words for 0..255 pixels whose largest is `largest`, where it is at most DIM_PIXEL (else
    ""): a model sees them as near-black pictures, and the 0..16 levels of scikit-learn's 8x8
    digits trained to 90% where the same images scaled to 0..255 reach 96%."""
    if not 1 < largest <= DIM_PIXEL:
        return ""
    return (
        f"pixels read as 0..255, the largest {largest:g}: near-black pictures to a model; if they are "
        f"levels 0..{largest:g}, multiply them by 255/{largest:g} (so that {largest:g} becomes 255; a "
        "file of fractions holds every pixel in [0, 1])"
    )


class PixelScale:
    """The file's pixel scale, settled by the first row that only one scale fits (a fraction:
    FRACTIONS; a value over 1: BYTES), or, where no row does, FRACTIONS for a file of 0s and 1s; and
    the checks that hold each block's pixels to it (`ready`)."""

    def __init__(self):
        self.scale: str | None = None
        self.row = 0  # the row that settled it
        self.reason = ""

    def settle(self, scale: str, row: int, reason: str = "") -> None:
        """Holds the file to `scale` from `row` on; `reason` says how that row set it."""
        self.scale, self.row = scale, row
        self.reason = reason or f"holds {scale}"

    def problem(self, values: np.ndarray, kind: str) -> str:
        """Why a row of `kind` (BYTES or FRACTIONS) does not fit the settled scale."""
        odd = values > 1 if kind == BYTES else values != np.rint(values)
        column = int(np.flatnonzero(odd)[0])
        return (
            f": pixel {column} is {values[column]:g} but row {self.row} {self.reason}; "
            "use one scale for the whole file, 0..255 or fractions in [0, 1]"
        )

    def describe(self) -> str:
        """How the file's pixels are read: "pixels 0..255", "pixels fractions in [0, 1]", or
        "pixels only 0s and 1s, read as fractions (1 = full intensity)"."""
        if self.scale is None or self.reason == f"holds {ONLY_0_1}":
            return f"pixels {ONLY_0_1}"
        return "pixels 0..255" if self.scale == BYTES else f"pixels {FRACTIONS}"

    def ready(
        self,
        pixels: np.ndarray,
        lines: np.ndarray,
        bad: list,
        kept: np.ndarray | None,
        *,
        whole: bool,
        settle_rest: Callable[[int], None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """(which rows are kept, their pixels): uint8 0..255, or float32 in [0, 1]. Rows of `lines`
        that break the rules (`whole`: 0..255 pixels that are not whole numbers too) are added to
        `bad`; `settle_rest(row)` settles the scale by the rest of the file where rows of 0s and 1s
        leave it open."""
        kept = np.ones(len(pixels), bool) if kept is None else kept
        if pixels.dtype == np.uint8 and self.scale == BYTES:
            return kept, pixels[kept] if not kept.all() else pixels
        if pixels.dtype == np.uint8 and self.scale == FRACTIONS and pixels.max(initial=0) <= 1:
            return kept, pixels[kept].astype(np.float32)  # a file of 0s and 1s
        pixels = pixels.astype(np.float64, copy=False)
        kept = self.in_range(pixels, lines, bad, kept)
        self.off_scale(pixels, kept, lines, bad)
        if whole and self.scale == BYTES:
            self._whole(pixels, kept, lines, bad)
        return kept, self._scaled(pixels[kept], lines[kept], settle_rest)

    def _whole(self, pixels: np.ndarray, kept: np.ndarray, lines: np.ndarray, bad: list) -> None:
        """Kept rows of 0..255 pixels that are not all whole numbers become bad (`kept` in place)."""
        for i in np.flatnonzero(kept & (pixels != np.rint(pixels)).any(axis=1)):
            column = int(np.flatnonzero(pixels[i] != np.rint(pixels[i]))[0])
            bad.append((int(lines[i]), (
                f": pixel {column} is {pixels[i, column]:g}, not a whole number 0..255: a dataset holds "
                "8-bit pictures (or fractions in [0, 1]); fit a table of measurements with the "
                "scikit-learn estimator TorchLogisticRegression, or scale its columns to 0..255"
            )))  # fmt: skip
            kept[i] = False

    @staticmethod
    def in_range(pixels: np.ndarray, lines: np.ndarray, bad: list, kept: np.ndarray) -> np.ndarray:
        """Which `kept` rows' pixels all lie in 0..255; the other kept rows are bad."""
        with np.errstate(invalid="ignore"):
            valid = (pixels >= 0).all(axis=1) & (pixels <= 255).all(axis=1)  # NaN compares False
        for i in np.flatnonzero(kept & ~valid):
            column = int(np.flatnonzero(~((pixels[i] >= 0) & (pixels[i] <= 255)))[0])
            bad.append((int(lines[i]), f": pixel {column} is {pixels[i, column]:g}, expected {PIXEL_RANGE}"))
        return kept & valid

    def off_scale(self, pixels: np.ndarray, kept: np.ndarray, lines: np.ndarray, bad: list) -> None:
        """Settles the file's scale by the first row only one scale fits (a value over 1: BYTES; a
        fraction: FRACTIONS); a kept row of the other scale becomes bad (`kept` updated in place)."""
        over = (pixels > 1).any(axis=1) & kept
        fractional = np.zeros(len(pixels), bool)
        if self.scale != FRACTIONS:  # only rows of values 0..1 can hold a fraction
            maybe = np.flatnonzero(kept & ~over)
            fractional[maybe] = (pixels[maybe] != np.rint(pixels[maybe])).any(axis=1)
        if self.scale is None and len(first := np.flatnonzero(over | fractional)):
            self.settle(BYTES if over[first[0]] else FRACTIONS, int(lines[first[0]]))
        wrong = {FRACTIONS: over, BYTES: fractional}.get(self.scale, np.zeros(0, bool))
        for i in np.flatnonzero(wrong):
            kind = BYTES if self.scale == FRACTIONS else FRACTIONS
            bad.append((int(lines[i]), self.problem(pixels[i], kind)))
            kept[i] = False

    def _scaled(self, pixels: np.ndarray, lines: np.ndarray, settle_rest: Callable) -> np.ndarray:
        """Good rows in the file's scale: fractions as float32, 0..255 as uint8 (float32 / 255 when
        some are not whole). Rows with a 1 before the scale is settled settle it by the rest of the file."""
        if self.scale is None and pixels.max(initial=0) == 1:
            settle_rest(int(lines[np.flatnonzero(pixels.max(axis=1) == 1)[0]]))
        if self.scale == FRACTIONS:
            return pixels.astype(np.float32)
        if np.array_equal(pixels, np.rint(pixels)):
            return pixels.astype(np.uint8)
        return (pixels / 255.0).astype(np.float32)
