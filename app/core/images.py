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


@dataclass(frozen=True)
class Shrunk:
    """An image made smaller for a model: its new bytes and type, and its size before and after."""

    data: bytes
    mime: str
    before: tuple[int, int]
    after: tuple[int, int]


def shrink(data: bytes, scale: float, name: str = "image") -> Shrunk:
    """Decode `data` at about `scale` of its size and encode it again: JPEG (quality 95) when it came as
    JPEG, else PNG, so a lossless upload stays lossless. Normalised as every adapter does (orientation,
    RGB), but only after the resize, so that the full-size pixels are held once."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            before = opened.size
            target = (max(1, round(before[0] * scale)), max(1, round(before[1] * scale)))
            was_jpeg = opened.format == "JPEG"
            if was_jpeg:
                opened.draft("RGB", target)  # decodes at 1/2, 1/4 or 1/8 scale, never below target
            if getattr(opened, "n_frames", 1) > 1:
                opened.seek(0)
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)
            full = opened if opened.mode in ("RGB", "RGBA", "L", "LA") else opened.convert("RGBA")
            turned = (full.width >= full.height) != (target[0] >= target[1])  # EXIF said to rotate by 90°
            oriented, before = (target[::-1], before[::-1]) if turned else (target, before)
            image = normalise(full.resize(oriented, Image.Resampling.LANCZOS, reducing_gap=3.0))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    out = io.BytesIO()
    if was_jpeg:
        image.save(out, format="JPEG", quality=95)
    else:
        image.save(out, format="PNG", compress_level=1)
    return Shrunk(out.getvalue(), "image/jpeg" if was_jpeg else "image/png", before, image.size)


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
