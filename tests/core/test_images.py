"""Image decoding: content decides, EXIF orientation applied, every mode becomes RGB."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.core.images import ImageError, decode_image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    decoded = decode_image(encode(Image.new(mode, (8, 8)), fmt))
    assert decoded.mode == "RGB" and decoded.size == (8, 8)


def test_transparent_pixels_are_flattened_on_white():
    decoded = decode_image(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)


def test_not_an_image_names_the_file():
    with pytest.raises(ImageError, match="notes.txt: not a readable image"):
        decode_image(b"hello, world", "notes.txt")


def test_truncated_file_is_refused():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(ImageError, match="cut.png: not a readable image"):
        decode_image(data[: len(data) // 2], "cut.png")


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue())
    assert decoded.getpixel((0, 0))[0] > 200
