"""Image decoding and normalisation shared by every adapter: RGB, EXIF orientation, grids."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps


class ImageError(ValueError):
    """An upload that is not a usable image; the message names the file."""


@dataclass(frozen=True)
class PreparedImages:
    """Images ready for a model, and a note for people when they were changed to fit it."""

    images: list[Image.Image]
    note: str | None = None


def decode_image(data: bytes, name: str = "image") -> Image.Image:
    """Decode bytes fully (catching truncated files), apply EXIF orientation, convert to RGB."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = normalise(opened)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    return image


def normalise(image: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, alpha flattened on white, RGB mode."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) of the grid `grid` makes of `count` images."""
    columns = math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns)


def combined_into_grid(count: int) -> str:
    """How a note says `count` images became one grid."""
    columns, rows = grid_shape(count)
    return f"the {count} images were combined into one {columns}×{rows} grid (left to right, top to bottom)"


def grid(images: list[Image.Image], cell: int = 448, gap: int = 8) -> Image.Image:
    """Tile images left to right, top to bottom, each scaled to fit a `cell`-pixel square."""
    columns, rows = grid_shape(len(images))
    canvas = Image.new("RGB", (columns * cell + (columns - 1) * gap, rows * cell + (rows - 1) * gap), "white")
    for index, image in enumerate(images):
        thumb = ImageOps.contain(image, (cell, cell))
        x = (index % columns) * (cell + gap) + (cell - thumb.width) // 2
        y = (index // columns) * (cell + gap) + (cell - thumb.height) // 2
        canvas.paste(thumb, (x, y))
    return canvas


def prepare_for_model(images: list[Image.Image], max_images: int | None) -> PreparedImages:
    """Normalise images; a model that takes fewer than were given gets them combined into one grid,
    and a note says so."""
    if not images:
        raise ImageError("at least one image is required")
    normalised = [normalise(image) for image in images]
    if max_images is None or len(normalised) <= max_images:
        return PreparedImages(normalised)
    takes = "one image" if max_images == 1 else f"at most {max_images} images"
    return PreparedImages([grid(normalised)], f"this model takes {takes}: {combined_into_grid(len(normalised))}")
