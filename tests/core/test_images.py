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


def _odd_modes() -> list[tuple[str, bytes]]:
    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    palette.paste(1, (20, 0, 40, 30))
    deep = Image.new("I;16", (40, 30))
    deep.paste(65535, (0, 0, 20, 30))
    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    rgba.paste((0, 128, 0, 255), (20, 0, 40, 30))
    return [("rgb.png", encode(Image.effect_noise((40, 30), 60).convert("RGB"), "PNG")),
            ("cmyk.jpg", encode(Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "JPEG")),
            ("palette.png", encode(palette, "PNG", transparency=0)),
            ("deep.png", encode(deep, "PNG")), ("rgba.png", encode(rgba, "PNG")),
            ("grey.png", encode(Image.new("L", (40, 30), 99), "PNG"))]


@pytest.mark.parametrize(("name", "data"), _odd_modes())
def test_sized_versions_of_one_decode_match_what_a_worker_decodes(name, data):
    """The whole image prepared on the server is, pixel for pixel, what a worker decodes from the upload
    itself; a smaller one is RGB and upright too."""
    from app.core.images import sized_versions

    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        versions = sized_versions(opened, [0.5, 1.0, 1.5])
        assert sorted(versions) == [0.5, 1.0]
        assert versions[1.0].tobytes() == decode_image(data, name).tobytes()
        assert versions[0.5].mode == "RGB" and versions[0.5].size == (20, 15)


def test_a_whole_image_cannot_come_from_a_smaller_decode():
    from app.core.images import sized_versions

    with Image.open(io.BytesIO(encode(Image.new("RGB", (64, 48)), "JPEG"))) as opened:
        opened.draft(None, (16, 12))
        opened.load()
        assert sized_versions(opened, [0.25], size=(64, 48))[0.25].size == (16, 12)
        with pytest.raises(ValueError, match="decoded at"):
            sized_versions(opened, [1.0], size=(64, 48))
