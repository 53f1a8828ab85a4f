"""Bar chart of output channels per layer, before and after pruning (matplotlib, Agg, no pyplot).

Norm layers are left out of the chart (they repeat the width of the layer they follow) unless
there is nothing else to show. A figure object is built and saved; no global matplotlib state
(backend, pyplot figures) is touched.

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

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from surgery.measure.widths import LayerWidth


def plot_layer_widths(layers: Sequence[LayerWidth], path: str | Path, title: str) -> Path:
    """Save a PNG with one pair of bars (before, after) per Conv/Linear layer; return its path."""
    shown = [x for x in layers if "Norm" not in x.kind] or list(layers)
    fig = Figure(figsize=(min(40.0, max(6.0, 0.22 * len(shown) + 2)), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = range(len(shown))
    paired = any(x.after is not None for x in shown)
    width = 0.4 if paired else 0.8
    ax.bar([i - width / 2 if paired else i for i in xs], [x.before for x in shown], width,
           color="0.75", label="before")
    if paired:
        ax.bar([i + width / 2 for i in xs], [x.after or 0 for x in shown], width,
               color="C0", label="after")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([x.name for x in shown], rotation=90, fontsize=7 if len(shown) < 60 else 5)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylabel("output channels / features")
    ax.set_title(f"{title}: channels per layer" + (" before / after" if paired else ""))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
