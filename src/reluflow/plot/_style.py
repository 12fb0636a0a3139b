"""Publication settings in one place: the rcParams of a printed figure, new figures and axes, and ``save``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DPI", "PUBLICATION_RC", "figure", "publication", "save"]

#: PNG resolution (dots per inch): a printed raster figure needs at least 200
DPI = 200

#: A paper's figure: TrueType (Type 42) fonts embedded in PDF and PostScript, so the text stays text (selectable,
#: editable, accepted by publishers that refuse Type 3 fonts); matplotlib's own DejaVu Sans, so the same tables give
#: the same files on every machine; sizes for a figure printed at its size (a panel about 3.4 in wide).
PUBLICATION_RC: dict[str, Any] = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "path",
    "svg.hashsalt": "reluflow",  # fixed element ids: the same SVG for the same figure
    "savefig.dpi": DPI,
    "figure.dpi": 100,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.7,
    "xtick.major.width": 0.7,
    "ytick.major.width": 0.7,
    "xtick.minor.width": 0.5,
    "ytick.minor.width": 0.5,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "image.cmap": "viridis",
    "axes.unicode_minus": True,
}

#: what ``save`` always sets while it writes, whatever the caller's rcParams: the fonts embedded as TrueType
_SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "reluflow"}
#: metadata that would differ between two saves of the same figure (the date); the rest names matplotlib's version
_NO_DATE = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}, "ps": {"CreationDate": None}}


def publication() -> contextlib.AbstractContextManager:
    """``with reluflow.plot.publication(): ...``: draw with ``PUBLICATION_RC`` (figures, axes and text created
    inside take its sizes and fonts)."""
    import matplotlib

    return matplotlib.rc_context(PUBLICATION_RC)


def figure(n_panels: int = 1, *, panel: tuple[float, float] = (3.4, 2.6), ncols: int | None = None,
           sharex: bool = False, sharey: bool = False) -> tuple[Figure, list[Axes]]:
    """A ``matplotlib.figure.Figure`` (no pyplot: no global state, safe in a batch job) with ``n_panels`` axes of
    ``panel`` inches each, at most ``ncols`` (default 3) per row, constrained layout; surplus grid cells hidden."""
    from matplotlib.figure import Figure

    n_panels = max(int(n_panels), 1)
    cols = min(n_panels, ncols or 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel[0] * cols, panel[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=sharex, sharey=sharey).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4.0, 3.0)) -> Axes:
    """``ax``, or the axes of a new pyplot figure (shown by a notebook) when it is None."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def _paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]


@contextlib.contextmanager
def _save_settings() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_SAVE_RC):
        yield


def save(fig: Figure, paths: str | Path | Sequence[str | Path], *,
         format: str | Sequence[str] | None = None, dpi: float = DPI) -> list[Path]:
    """Write ``fig`` to each of ``paths`` in the format of its suffix (``.pdf``, ``.png``, ``.svg``, ``.eps``) or
    of ``format`` (one for all paths, or one per path): PDF and PostScript with TrueType (Type 42) fonts embedded,
    SVG with text as paths, none with a creation date (the same figure gives the same bytes); PNG at ``dpi`` (at
    least 200: a figure of ``w × h`` inches is ``w·dpi × h·dpi`` pixels).

    A constrained or tight layout is solved once, on the first file: every file has the same layout. Returns the
    paths written.
    """
    if dpi < 200:
        raise ValueError(f"dpi = {dpi!r} is not allowed: a printed figure needs at least 200 dots per inch")
    out = _paths(paths)
    formats = [format] * len(out) if format is None or isinstance(format, str) else list(format)
    if len(formats) != len(out):
        raise ValueError(f"{len(formats)} formats for {len(out)} paths: expected one format, or one per path")
    engine = fig.get_layout_engine()
    try:
        for i, (path, given) in enumerate(zip(out, formats, strict=True)):
            fmt = (given or path.suffix.lstrip(".")).lower()
            if not fmt:
                raise ValueError(f"{path}: no format: give a suffix (.pdf, .png, ...) or format=")
            meta = _NO_DATE.get("ps" if fmt == "eps" else fmt)
            with _save_settings():
                fig.savefig(path, format=fmt, dpi=dpi, metadata=meta)
            if i == 0 and engine is not None:
                fig.set_layout_engine("none")  # solved: the other files keep this layout (and skip its cost)
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
    return out
