"""Chart of output channels per layer, dense and pruned (matplotlib, Agg, no pyplot).

The top panel shows each Conv/Linear layer's width on a log scale (a 1000-way classifier does
not squash 64-channel layers), dense in grey and pruned in blue; with a pruned model a second
panel shows the kept fraction per layer (0 to 1). Norm layers are left out (they repeat the
width of the layer they follow) unless there is nothing else to show. Layer names are drawn
in full (the figure grows to fit them). A figure object is built and saved (to a temporary
file, then renamed: ``surgery.atomic``); no global matplotlib state (backend, pyplot figures)
is touched.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from surgery.measure.widths import LayerWidth
    >>> layers = [LayerWidth("conv1", "Conv2d", 6, 3), LayerWidth("fc", "Linear", 10, 10)]
    >>> path = plot_layer_widths(layers, Path(tempfile.mkdtemp()) / "w.png", "lenet")
    >>> path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from surgery.atomic import write_atomic
from surgery.measure.widths import LayerWidth

DENSE, PRUNED = "0.7", "C0"


def plot_layer_widths(layers: Sequence[LayerWidth], path: str | Path, title: str) -> Path:
    """Save a PNG of channels per Conv/Linear layer (log scale; with kept fractions when
    pruned); return its path."""
    shown = [x for x in layers if "Norm" not in x.kind] or list(layers)
    paired = any(x.after is not None for x in shown)
    width = min(40.0, max(6.0, 0.22 * len(shown) + 2))
    fig = Figure(figsize=(width, 7.0 if paired else 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2)) if paired else \
        [fig.add_subplot()]
    _widths(axes[0], shown, paired)
    if paired:
        _kept(axes[1], shown)
        axes[0].set_title(f"{title}: channels per layer, dense vs pruned")
    else:
        axes[0].set_title(f"{title}: channels per layer")
    last = axes[-1]
    last.set_xticks(range(len(shown)))
    last.set_xticklabels([x.name for x in shown], rotation=90,
                         fontsize=7 if len(shown) < 60 else 5)
    last.set_xlim(-0.6, len(shown) - 0.4)
    # the temporary name ends with path's name: savefig picks the format from its suffix;
    # "tight": long names are not clipped
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))


def _widths(ax: Axes, shown: Sequence[LayerWidth], paired: bool) -> None:
    """Bars of output width per layer on a log y axis (dense; pruned next to it if paired)."""
    xs = range(len(shown))
    bar = 0.4 if paired else 0.8
    ax.bar([i - bar / 2 if paired else i for i in xs], [x.before for x in shown], bar,
           color=DENSE, label="dense")
    if paired:
        ax.bar([i + bar / 2 for i in xs], [x.after or 0 for x in shown], bar, color=PRUNED,
               label="pruned")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    ax.set_ylabel("output channels (log)")
    ax.grid(axis="y", alpha=0.3, which="both")


def _kept(ax: Axes, shown: Sequence[LayerWidth]) -> None:
    """Bars of the kept fraction (after / before) per layer, 0 to 1."""
    kept = [(x.after or 0) / x.before if x.before else 0.0 for x in shown]
    ax.bar(range(len(shown)), kept, 0.8, color=PRUNED)
    ax.axhline(1.0, color=DENSE, linewidth=1)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("kept fraction")
    ax.grid(axis="y", alpha=0.3)
