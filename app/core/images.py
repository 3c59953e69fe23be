"""Image decoding and normalisation shared by every adapter: RGB, EXIF orientation, grids."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps


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
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: the image has too many pixels to decode safely") from None
    except (OSError, SyntaxError, ValueError) as exc:  # the decoder's own messages name its internals
        cut = "truncated" in str(exc).lower() or isinstance(exc, EOFError)
        raise ImageError(f"{name}: not a readable image (the file is "
                         f"{'cut short' if cut else 'damaged, or in no image format'})") from None
    return image


# EXIF orientation → the transpose that shows the image upright (as `ImageOps.exif_transpose` does)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_RESIZABLE = ("RGB", "RGBA", "L", "LA")  # modes that resize well as they are (palettes would use nearest)


def sized_versions(image: Image.Image, scales: Iterable[float],
                   size: tuple[int, int] | None = None) -> dict[float, Image.Image]:
    """One decoded image (loaded, as stored) at each of `scales` of `size` (its size as stored, when it
    was decoded smaller, at a JPEG draft scale), each normalised as `normalise` does (EXIF orientation,
    alpha on white, RGB), all from this one decode. Below 1 the image is resized (Lanczos) before it is
    turned upright, so full-size pixels are never copied to turn them; a scale of 1 or more (key 1.0)
    is the whole image, turned upright in place and, when it is RGB already, `image` itself."""
    width, height = size or image.size
    wanted = {min(1.0, scale) for scale in scales}
    upright = _UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation, 1))
    out: dict[float, Image.Image] = {}
    smaller = sorted((scale for scale in wanted if scale < 1), reverse=True)
    if smaller:
        source = image if image.mode in _RESIZABLE else to_rgb(image)  # e.g. CMYK, 16-bit: converted once
        for scale in smaller:
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = source.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            out[scale] = to_rgb(small.transpose(upright) if upright is not None else small, copy=False)
        del source
    if 1.0 in wanted:
        if image.size != (width, height):
            raise ValueError(f"the whole image was asked for, but it was decoded at {image.width}×{image.height}")
        if upright is not None:
            ImageOps.exif_transpose(image, in_place=True)
        out[1.0] = to_rgb(image, copy=False)
    return out


def normalise(image: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, alpha flattened on white, RGB mode; always a new image."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return to_rgb(ImageOps.exif_transpose(image), copy=False)  # exif_transpose made a copy already


def to_rgb(image: Image.Image, copy: bool = True) -> Image.Image:
    """Alpha flattened on white, 16-bit scaled to 8, any mode as RGB; an RGB image is returned as it is
    unless `copy`."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image.copy() if copy else image


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
