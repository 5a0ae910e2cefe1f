"""Image grids as PNG files (written atomically)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from common.files import atomic_write_bytes

SIDE = 28


def grid(images: np.ndarray, columns: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """Tile [N, 784] images with values in [0, 1] into one uint8 picture, row by row."""
    n = len(images)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    cell = SIDE + pad
    canvas = np.ones((rows * cell + pad, columns * cell + pad), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[pad + r * cell: pad + r * cell + SIDE, pad + c * cell: pad + c * cell + SIDE] = (
            np.clip(image, 0.0, 1.0).reshape(SIDE, SIDE))
    return (canvas * 255.0 + 0.5).astype(np.uint8)


def png_bytes(picture: np.ndarray, scale: int = 1) -> bytes:
    """A uint8 grey picture (or floats in [0, 1]) as PNG file bytes."""
    if picture.dtype != np.uint8:
        picture = (np.clip(picture, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    image = Image.fromarray(picture, mode="L")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: Path, picture: np.ndarray, scale: int = 2) -> None:
    atomic_write_bytes(path, png_bytes(picture, scale))
