"""What a person looks at: the confusion matrix, reliability and risk-coverage plots, and the thumbnails,
contact sheets and static HTML pages shared by the evaluation reports (the most confident mistakes), the data
audit (the flagged images) and a run's TensorBoard images, so all look and behave alike. Each plot saves to a
path or a file object."""

import html
import math
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib.colors
import matplotlib.figure
import matplotlib.ticker
import numpy as np
import pandas as pd
from PIL import Image

THUMBNAIL_SIDE = 160
SHEET_COLUMNS = 6
ANNOTATED_UP_TO = 30  # labels up to which the confusion matrix prints counts in its cells
BASE_STYLE = ("body{font-family:sans-serif;margin:1em} table{border-collapse:collapse} "
              "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px} "
              "figure{display:inline-block;width:200px;margin:6px;vertical-align:top} "
              "figure img{width:200px;height:auto} figcaption{font-size:12px}")


def thumbnail(image: np.ndarray) -> Image.Image:
    """A uint8 RGB image shrunk to fit THUMBNAIL_SIDE (never enlarged)."""
    small = Image.fromarray(np.asarray(image, dtype=np.uint8))
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return small


def contact_sheet(thumbnails: Sequence[Image.Image], captions: Sequence[str], colours: Sequence[str],
                  path: pathlib.Path, title: str, empty: str) -> None:
    """A grid of thumbnails, each under its caption in its colour; `empty` is written when there are none."""
    columns = min(SHEET_COLUMNS, max(1, len(thumbnails)))
    rows = max(1, math.ceil(len(thumbnails) / columns))
    figure = matplotlib.figure.Figure(figsize=(max(8.0, 3.2 * columns), 3.6 * rows + 0.4), dpi=100,
                                      layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, image, caption, colour in zip(grid, thumbnails, captions, colours):
        axes.imshow(np.asarray(image))
        axes.set_title(caption, fontsize=7, color=colour)
    if not thumbnails:
        grid[0].text(0.5, 0.5, empty, ha="center", va="center", fontsize=14)
    figure.suptitle(title)
    figure.savefig(path)


def html_page(title: str, body: str, style: str = "") -> str:
    """A self-contained static page; title is escaped here, body is HTML the caller escaped."""
    heading = html.escape(title)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{heading}</title>"
            f"<style>{BASE_STYLE} {style}</style></head>\n<body><h1>{heading}</h1>\n{body}\n</body></html>\n")


def _taxonomic_order(class_names: Sequence[str], phylum_of: Mapping[str, str], ids: Sequence[int]) -> list[int]:
    """Label ids sorted by phylum, then name, so each phylum is one block of a matrix."""
    return sorted(ids, key=lambda i: (phylum_of[class_names[i]], class_names[i]))


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], phylum_of: Mapping[str, str],
                          path: pathlib.Path, title: str = "", rank: str = "family") -> None:
    """Counts of the labels (at `rank`) seen as truth or prediction, grouped by phylum, on a log colour scale.

    Readable at 202 families or 400 species: the log scale keeps single mistakes visible next to diagonals of
    dozens, empty cells stay white, phylum blocks are outlined and named on the top and right edges, and the
    tick labels shrink with the number of labels. Small matrices also print each count.
    """
    seen = np.flatnonzero(confusion.sum(axis=0) + confusion.sum(axis=1))
    order = _taxonomic_order(class_names, phylum_of, seen)
    counts = confusion[np.ix_(order, order)]
    names = [class_names[i] for i in order]
    phyla = [phylum_of[n] for n in names]
    size = len(order)
    side = min(24.0, max(6.0, 0.1 * size + 3))
    font = min(9.0, 0.6 * 0.8 * side * 72 / max(size, 1))
    figure = matplotlib.figure.Figure(figsize=(side + 1.5, side + 1), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    colours = matplotlib.colors.ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0, 0.85, 256)))
    norm = matplotlib.colors.LogNorm(vmin=1, vmax=max(2, counts.max()))
    image = axes.imshow(np.ma.masked_equal(counts, 0), cmap=colours.with_extremes(bad="white"), norm=norm,
                        interpolation="nearest")
    if size <= ANNOTATED_UP_TO:
        for row, column in zip(*np.nonzero(counts)):
            axes.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=font,
                      color="white" if norm(counts[row, column]) < 0.6 else "black")
    scale = figure.colorbar(image, ax=axes, shrink=0.6, label="images (log scale; white = none)")
    scale.ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:.0f}"))
    scale.ax.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))
    axes.set_xticks(range(size), names, rotation=90, fontsize=font)
    axes.set_yticks(range(size), names, fontsize=font)
    axes.set_xlabel(f"predicted {rank}")
    axes.set_ylabel(f"true {rank}")
    starts = [i for i in range(size) if i == 0 or phyla[i] != phyla[i - 1]]
    centres = [(start + end - 1) / 2 for start, end in zip(starts, [*starts[1:], size])]
    for start in starts[1:]:
        axes.axhline(start - 0.5, color="black", linewidth=0.8)
        axes.axvline(start - 0.5, color="black", linewidth=0.8)
    top, right = axes.secondary_xaxis("top"), axes.secondary_yaxis("right")
    top.set_xticks(centres, [phyla[i] for i in starts], rotation=90, fontsize=8, fontweight="bold")
    right.set_yticks(centres, [phyla[i] for i in starts], fontsize=8, fontweight="bold")
    axes.set_title(title or "confusion matrix")
    figure.savefig(path)


def plot_reliability_diagram(bins: pd.DataFrame, ece: float, path: pathlib.Path, title: str = "") -> None:
    """Accuracy per confidence bin against its mean confidence and the diagonal (hatched above the blue:
    over-confident), with how many images each bin holds underneath."""
    figure = matplotlib.figure.Figure(figsize=(6, 7), dpi=120, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = bins["upper"] - bins["lower"]
    filled = bins["count"] > 0
    top.bar(bins["lower"][filled], bins["accuracy"][filled], width=width[filled], align="edge",
            edgecolor="black", label="accuracy")
    top.bar(bins["lower"][filled], bins["confidence"][filled], width=width[filled], align="edge", fill=False,
            edgecolor="tab:red", hatch="//", label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(f"{title or 'reliability'}: ECE {ece:.3f} ({len(bins)} bins)")
    bottom.bar(bins["lower"], bins["count"], width=width, align="edge", color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    figure.savefig(path)


def plot_risk_coverage(curve: pd.DataFrame, aurc: float, path: pathlib.Path, title: str = "") -> None:
    """Error rate among the answered images against the share answered, abstaining below a confidence
    threshold (metrics.risk_coverage_curve); the area under it is the AURC."""
    figure = matplotlib.figure.Figure(figsize=(6, 4.5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    axes.step(curve["coverage"], curve["risk"], where="post", color="tab:blue")
    axes.fill_between(curve["coverage"], curve["risk"], step="post", alpha=0.2, color="tab:blue")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, max(0.05, float(np.max(curve["risk"].to_numpy(), initial=0.0)) * 1.1))
    axes.set_xlabel("coverage (share of images answered, surest first)")
    axes.set_ylabel("risk (error rate among the answered)")
    axes.set_title(f"{title or 'risk-coverage'}: AURC {aurc:.3f}")
    figure.savefig(path)
