"""Limits on input, checked before any work: each refusal is a 413 (size) or 422 (content) whose
message names the file or field and the limit. Unit tests of app/validation.py with small limits,
then the request-body limit over real HTTP, with a body sent in chunks and no Content-Length."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageFile

from app.compare.validation import (
    InputError,
    Upload,
    check_image,
    check_images,
    check_models,
    check_params,
    check_prompt,
)
from app.core.catalog import Catalog, parse_catalog
from app.core.images import decode_image
from app.core.settings import MB, Limits

SMALL = Limits(max_images=3, max_image_mb=1, max_request_mb=2, max_megapixels=1, max_prompt_chars=4000,
               max_models=8, max_new_tokens=512)


# ---------------------------------------------------------------- building test files


def encode(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def noise_png(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(Image.effect_noise(size, 60).convert("RGB"), "PNG")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, built row by row without ever holding the pixels: a
    20000×20000 one (400 megapixels) is about 50 KB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def refused(call, *args) -> InputError:
    with pytest.raises(InputError) as caught:
        call(*args)
    return caught.value


def assert_refusal(error: InputError, status: int, field: str, *words: str) -> None:
    """The status, the field, and every word (the file name, the limit) in the message."""
    assert error.status_code == status, error
    assert error.field == field, error
    for word in words:
        assert word in error.message, f"{word!r} not in {error.message!r}"


# ---------------------------------------------------------------- how many, how big


def test_too_many_images_is_413_naming_the_limit():
    uploads = [Upload(f"{i}.png", noise_png()) for i in range(4)]
    assert_refusal(refused(check_images, uploads, SMALL), 413, "images", "4 images", "the limit is 3")


def test_no_image_is_422():
    assert_refusal(refused(check_images, [], SMALL), 422, "images", "at least one image")


def test_one_image_over_the_per_image_size_is_413_naming_the_file():
    big = Upload("holiday.png", b"\x89PNG" + os.urandom(MB + 10))
    error = refused(check_images, [Upload("ok.png", noise_png()), big], SMALL)
    assert_refusal(error, 413, "images[holiday.png]", "holiday.png", "1.0 MB", "the limit is 1 MB per image")


def test_the_size_is_judged_before_decoding(monkeypatch):
    calls = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: calls.append(a) or pytest.fail("decoded"))
    refused(check_image, Upload("huge.png", bytes(MB + 1)), SMALL)
    assert calls == []


def test_request_total_over_the_limit_is_413():
    uploads = [Upload(f"part{i}.png", bytes(800 * 1024)) for i in range(3)]  # each under 1 MB, 2.3 MB in all
    assert_refusal(refused(check_images, uploads, SMALL), 413, "images", "2.3 MB in all", "the limit is 2 MB")


def test_over_the_megapixel_limit_is_413_judged_from_the_header(monkeypatch):
    """2000×1000 = 2 megapixels against a limit of 1. The file is cut in half, so only its header
    could have been read: a decode would have failed with 422, not 413."""
    whole = bilevel_png(2000, 1000)
    loads = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or original(self))
    error = refused(check_image, Upload("poster.png", whole[: len(whole) // 2]), SMALL)
    assert_refusal(error, 413, "images[poster.png]", "poster.png", "2000×1000", "2.0 megapixels",
                   "the limit is 1 megapixels")
    assert loads == []


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 Mpx: Pillow's warning; 400 Mpx: Pillow's error
def test_decompression_bomb_is_413_without_decoding(side):
    bomb = bilevel_png(side, side)
    assert len(bomb) < 100_000  # tiny on the wire, 100–400 megapixels once decoded
    error = refused(check_image, Upload("bomb.png", bomb), Limits())
    assert_refusal(error, 413, "images[bomb.png]", "bomb.png", "the limit of 40 megapixels")


# ---------------------------------------------------------------- broken and fake files


@pytest.mark.parametrize(("name", "fmt"), [("cut.png", "PNG"), ("cut.jpg", "JPEG")])
def test_truncated_images_are_422(name, fmt):
    data = encode(Image.effect_noise((96, 64), 60).convert("RGB"), fmt)
    error = refused(check_image, Upload(name, data[: len(data) * 2 // 3]), SMALL)
    assert_refusal(error, 422, f"images[{name}]", name, "not a readable image", "truncated")


def test_a_non_image_named_png_is_judged_by_content():
    error = refused(check_image, Upload("cat.png", b"#!/bin/sh\necho this is not a picture\n"), SMALL)
    assert_refusal(error, 422, "images[cat.png]", "cat.png", "not a readable image")


def test_png_header_on_garbage_is_422():
    error = refused(check_image, Upload("fake.png", b"\x89PNG\r\n\x1a\n" + os.urandom(500)), SMALL)
    assert_refusal(error, 422, "images[fake.png]", "fake.png", "not a readable image")


def test_an_empty_file_is_422():
    assert_refusal(refused(check_image, Upload("blank.png", b""), SMALL), 422, "images[blank.png]",
                   "blank.png", "empty")


# ---------------------------------------------------------------- odd but valid images


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 24), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (32, 24), color) for color in ((255, 0, 0), (0, 255, 0))]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


@pytest.mark.parametrize(("name", "data", "frames", "fmt"), [
    ("spinner.gif", animated_gif(), 3, "GIF"),
    ("scan.tif", multipage_tiff(), 2, "TIFF"),
])
def test_multi_frame_images_are_accepted_and_the_note_says_the_first_frame_is_used(name, data, frames, fmt):
    checked = check_image(Upload(name, data), SMALL)
    assert checked.format == fmt and (checked.width, checked.height) == (32, 24)
    assert checked.note == f"{name} has {frames} frames: the first is used"
    decoded = decode_image(data, name)
    assert decoded.mode == "RGB" and decoded.size == (32, 24)


def test_first_frame_is_what_the_model_sees():
    decoded = decode_image(multipage_tiff(), "scan.tif")
    assert decoded.getpixel((5, 5)) == (255, 0, 0)


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "JPEG", quality=95)


def sixteen_bit_png() -> bytes:
    image = Image.new("I;16", (40, 30))
    image.paste(65535, (0, 0, 20, 30))
    return encode(image, "PNG")


def palette_with_transparency_png() -> bytes:
    image = Image.new("P", (40, 30), 0)
    image.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    image.paste(1, (20, 0, 40, 30))
    return encode(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    image = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (20, 0, 40, 30))
    return encode(image, "PNG")


@pytest.mark.parametrize(("name", "data", "mode_before", "left", "right"), [
    ("print.jpg", cmyk_jpeg(), "CMYK", None, None),
    ("depth.png", sixteen_bit_png(), "I;16", (255, 255, 255), (0, 0, 0)),
    ("logo.png", palette_with_transparency_png(), "P", (255, 255, 255), (255, 0, 0)),
    ("overlay.png", rgba_png(), "RGBA", (255, 255, 255), (0, 128, 0)),
])
def test_unusual_modes_are_accepted_and_converted_to_rgb(name, data, mode_before, left, right):
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == mode_before
    checked = check_image(Upload(name, data), SMALL)
    assert (checked.width, checked.height) == (40, 30) and checked.note is None
    decoded = decode_image(data, name)
    assert decoded.mode == "RGB" and decoded.size == (40, 30)
    if left is not None:  # transparent pixels are flattened on white; 16-bit is scaled to 8
        assert decoded.getpixel((5, 5)) == left
        assert decoded.getpixel((35, 5)) == right
    else:  # CMYK cyan → RGB with no red and plenty of green and blue
        red, green, blue = decoded.getpixel((5, 5))
        assert red < 60 and green > 150 and blue > 150


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    checked = check_image(Upload("phone.jpg", data), SMALL)
    assert (checked.width, checked.height) == (20, 40)  # as displayed: the page states the size it shows
    decoded = decode_image(data, "phone.jpg")
    assert decoded.size == (20, 40)  # as displayed
    red, green, blue = decoded.getpixel((10, 3))  # the stored left edge is now the top
    assert blue > 200 and red < 60


# ---------------------------------------------------------------- prompt, models, parameters


@pytest.mark.parametrize("prompt", [None, "", "   \n\t "])
def test_a_blank_prompt_is_422(prompt):
    assert_refusal(refused(check_prompt, prompt, SMALL), 422, "prompt", "blank")


def test_a_prompt_of_4001_characters_is_422_naming_the_limit():
    assert check_prompt("x" * 4000, SMALL) == "x" * 4000
    assert_refusal(refused(check_prompt, "x" * 4001, SMALL), 422, "prompt", "4,001 characters", "the limit is 4,000")


def test_a_prompt_with_nul_is_422():
    assert_refusal(refused(check_prompt, "what is \x00 this", SMALL), 422, "prompt", "NUL")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    models = [{"id": f"m{i}", "repo": f"org/m{i}", "family": "llava", "min_gpu_gb": 1.0} for i in range(10)]
    models.append({"id": "gone", "available": False, "unavailable_reason": "no weights were ever published"})
    return parse_catalog({"models": models})


def test_known_models_pass(catalog):
    assert check_models(["m0", "m3"], catalog, SMALL) == ["m0", "m3"]


def test_an_unknown_model_is_422_naming_it(catalog):
    assert_refusal(refused(check_models, ["m0", "gpt-17"], catalog, SMALL), 422, "models", "unknown model 'gpt-17'")


def test_an_unavailable_model_is_422_saying_why(catalog):
    assert_refusal(refused(check_models, ["gone"], catalog, SMALL), 422, "models", "gone is unavailable",
                   "no weights were ever published")


def test_nine_models_is_422_naming_the_limit(catalog):
    assert_refusal(refused(check_models, [f"m{i}" for i in range(9)], catalog, SMALL), 422, "models",
                   "9 models", "the limit is 8")


def test_no_model_is_422(catalog):
    assert_refusal(refused(check_models, [], catalog, SMALL), 422, "models", "at least one model")


def test_a_model_picked_twice_is_422(catalog):
    assert_refusal(refused(check_models, ["m1", "m2", "m1"], catalog, SMALL), 422, "models", "once")


def test_parameters_default_and_coerce():
    assert check_params({}, SMALL) == {"max_new_tokens": 256, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    assert check_params({"max_new_tokens": "12", "temperature": "0.7", "top_p": "0.9", "seed": "3"}, SMALL) == {
        "max_new_tokens": 12, "temperature": 0.7, "top_p": 0.9, "seed": 3}


@pytest.mark.parametrize(("values", "field", "words"), [
    ({"temperature": "nan"}, "temperature", ["must be a number"]),
    ({"top_p": float("nan")}, "top_p", ["must be a number"]),
    ({"temperature": "inf"}, "temperature", ["between 0.0 and 2.0", "inf"]),
    ({"temperature": "2.5"}, "temperature", ["between 0.0 and 2.0", "2.5"]),
    ({"temperature": "-1"}, "temperature", ["between 0.0 and 2.0"]),
    ({"top_p": "0"}, "top_p", ["between 0.01 and 1.0"]),
    ({"max_new_tokens": "0"}, "max_new_tokens", ["between 1 and 512"]),
    ({"max_new_tokens": "513"}, "max_new_tokens", ["between 1 and 512", "513"]),
    ({"max_new_tokens": "1.5"}, "max_new_tokens", ["must be a number", "'1.5'"]),
    ({"max_new_tokens": "lots"}, "max_new_tokens", ["must be a number", "'lots'"]),
    ({"seed": "-1"}, "seed", ["between 0 and 2147483647"]),
    ({"seed": str(2**31)}, "seed", ["between 0 and 2147483647"]),
    ({"seed": "0x10"}, "seed", ["must be a number"]),
    ({"temperature": "hot" * 100}, "temperature", ["must be a number", "hothot"]),
])
def test_bad_parameters_are_422_naming_the_field_and_range(values, field, words):
    error = refused(check_params, values, SMALL)
    assert_refusal(error, 422, field, *words)
    assert len(error.message) < 200  # a long bad value is cut, not echoed whole


# ---------------------------------------------------------------- over HTTP: a body with no length


def _stored(server) -> tuple[int, set[Path]]:
    total = httpx.get(f"{server.url}/api/comparisons").json()["total"]
    folder = Path(server.data_dir) / "images"
    return total, set(folder.rglob("*")) if folder.exists() else set()


def _chunked_multipart(boundary: str, image_bytes: int, chunk: int = 256 * 1024):
    """A comparison form whose one image is `image_bytes` long, sent chunked (no Content-Length)."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nDescribe.\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\ntiny-qwen2-vl\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()
    yield head + noise_png()
    block = os.urandom(chunk)
    sent = 0
    while sent < image_bytes:
        yield block
        sent += len(block)
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/comparisons", "/compare"])
def test_a_chunked_body_over_the_request_limit_is_413_and_stores_nothing(live_server, path):
    limit = Limits().max_request_bytes
    before = _stored(live_server)
    boundary = "soakboundary7d1f"
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        response = httpx.post(f"{live_server.url}{path}", content=_chunked_multipart(boundary, limit + MB),
                              headers=headers, timeout=60)
    except (httpx.RemoteProtocolError, httpx.WriteError):  # the server may close before the client stops sending
        response = None
    if response is not None:
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert response.status_code == 413, response.text
        assert "request body" in response.text and f"{limit // MB} MB" in response.text
    assert _stored(live_server) == before


def test_a_model_that_cannot_be_loaded_here_is_refused_when_picked():
    from app.compare.validation import InputError, check_models
    from app.core.catalog import parse_catalog
    from app.core.settings import Limits

    catalog = parse_catalog({"models": [{"id": "far", "repo": "org/far", "family": "llava", "min_gpu_gb": 1}]})
    with pytest.raises(InputError) as caught:
        check_models(["far"], catalog, Limits(), {"far": "not in the local Hugging Face cache"})
    assert caught.value.status_code == 422 and caught.value.field == "models"
    assert "far cannot be loaded here: not in the local Hugging Face cache" in caught.value.message
