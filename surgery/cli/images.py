"""What ``surgery finetune --images DIR`` checks before any training: every image decodes and
has at most ``MAX_PIXELS`` pixels, and the model is a classifier with one score per class.

Each file is opened (its header gives the size, so a 400-Mpixel image is refused before its
pixels are read) and then decoded (JPEGs at reduced scale, which still reads all their data),
so a corrupt or truncated file is named before the first epoch rather than failing in it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "a.png"
    >>> Image.new("RGB", (40, 30)).save(path)
    >>> check_images([path])
    1
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from surgery.errors import SurgeryError

MAX_PIXELS = 1 << 26  # 67 Mpixel (8192 x 8192); PIL itself warns above 89 Mpixel


def check_images(paths: Iterable[str | Path], max_pixels: int = MAX_PIXELS) -> int:
    """Open and decode every image of ``paths``; return how many. An undecodable file or one
    of over ``max_pixels`` pixels raises SurgeryError naming it. See the module example."""
    count = 0
    for path in paths:
        _check_image(Path(path), max_pixels)
        count += 1
    return count


def _check_image(path: Path, max_pixels: int) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise SurgeryError(f"--images: {path} has {width} x {height} pixels; at "
                                       f"most {max_pixels:,} are read")
                image.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale
                image.load()
    except SurgeryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SurgeryError(f"--images: {path} has over {max_pixels:,} pixels") from None
    except Exception as exc:  # image decoders raise many types (OSError, SyntaxError, ...)
        raise SurgeryError(f"--images: {path} cannot be decoded "
                           f"({type(exc).__name__}: {str(exc)[:120]})") from exc


def class_count(model: nn.Module, shape: tuple[int, ...]) -> int:
    """How many class scores ``model`` gives for zeros of ``shape``: the last dim of a 2-D
    output; anything else raises SurgeryError.

    Example:
        >>> from surgery.io.models import LeNet
        >>> class_count(LeNet(), (1, 1, 28, 28))
        10
    """
    with torch.no_grad():
        out = model(torch.zeros(*shape))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        what = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SurgeryError(f"fine-tuning on images needs a classifier (scores of shape [N, "
                           f"classes]); the model gives {what}")
    return out.shape[-1]


__all__ = ["MAX_PIXELS", "check_images", "class_count"]
