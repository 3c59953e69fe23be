"""Checks on a comparison request, done before any work: each refusal names the field and the limit."""

from __future__ import annotations

import io
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Path as PathParam
from PIL import ExifTags, Image

from app.core.catalog import Catalog
from app.core.images import ImageError
from app.core.settings import MB, Limits, megabytes
from app.storage import files

NAME_MAX_CHARS = 255
MIN_TEMPERATURE = 0.01  # below it sampling is greedy in all but name, and logits / t overflows
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
RowId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="a row id")]


class Preparer(Protocol):
    """What the server makes of each upload from the one decode that checks it (`app.compare.downsize`)."""

    def draft(self, width: int, height: int) -> tuple[int, int]:
        """The least size a JPEG of width×height may be decoded at (JPEG's DCT scaling picks 1/2, 1/4 or
        1/8 of it, never below; it reads and checks every byte of the file as a full decode does)."""
        ...

    def add(self, name: str, data: bytes, image: Image.Image, size: tuple[int, int]) -> None:
        """Given the upload decoded (loaded, as stored; smaller than `size` after a draft) while it is held."""
        ...


class InputError(ValueError):
    """A refused request: 413 for sizes, 422 for content; `field` says what caused it."""

    def __init__(self, field: str, message: str, status_code: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status_code = status_code

    @property
    def detail(self) -> str:
        """The message, prefixed with the field unless it already names it (or the file it is about)."""
        named = self.field.partition("[")[2].rstrip("]") or self.field
        return self.message if named in self.message else f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Upload:
    """A file as received: the name the browser gave it, and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class CheckedImage:
    """An upload that decoded fully, with what decoding found."""

    name: str
    data: bytes
    format: str
    width: int
    height: int
    note: str | None = None

    @property
    def mime(self) -> str:
        return Image.MIME.get(self.format.upper(), "application/octet-stream")


def check_prompt(prompt: str | None, limits: Limits) -> str:
    if prompt is None or not prompt.strip():
        raise InputError("prompt", "write a prompt: it must not be blank")
    if len(prompt) > limits.max_prompt_chars:
        raise InputError("prompt", f"is {len(prompt):,} characters; the limit is {limits.max_prompt_chars:,}")
    if "\x00" in prompt:
        raise InputError("prompt", "must not contain NUL characters")
    return prompt


def check_models(models: list[str], catalog: Catalog, limits: Limits,
                 unreachable: dict[str, str | None] | None = None) -> list[str]:
    """Known, available, reachable models, each once, at most `limits.max_models`."""
    if not models:
        raise InputError("models", "pick at least one model")
    if len(models) > limits.max_models:
        raise InputError("models", f"{len(models)} models picked; the limit is {limits.max_models}")
    repeated = sorted({model for model in models if models.count(model) > 1})
    if repeated:
        raise InputError("models", f"each model may be picked once ({', '.join(repeated)} more than once)")
    for model in models:
        try:
            spec = catalog.get(model)
        except KeyError:
            raise InputError("models", f"unknown model '{model}'") from None
        if not spec.available:
            raise InputError("models", f"{model} is unavailable: {spec.unavailable_reason}")
        reason = (unreachable or {}).get(model)
        if reason:
            raise InputError("models", f"{model} cannot be loaded here: {reason}")
    return models


def check_params(values: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """max_new_tokens, temperature, top_p, seed: coerced and range-checked."""
    rules = {
        "max_new_tokens": (int, 1, limits.max_new_tokens, 256),
        "temperature": (float, 0.0, 2.0, 0.0),
        "top_p": (float, 0.01, 1.0, 1.0),
        "seed": (int, 0, 2**31 - 1, 0),
    }
    checked: dict[str, Any] = {}
    for name, (kind, low, high, default) in rules.items():
        raw = values.get(name)
        if raw is None or raw == "":
            checked[name] = default
            continue
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise InputError(name, f"must be a number (got {str(raw)[:40]!r})") from None
        if kind is float and value != value:  # NaN
            raise InputError(name, f"must be a number between {low} and {high}")
        if not low <= value <= high:
            raise InputError(name, f"must be between {low} and {high} (got {value})")
        if name == "temperature" and 0 < value < MIN_TEMPERATURE:  # dividing logits by it overflows
            raise InputError(name, f"must be 0 (greedy) or from {MIN_TEMPERATURE} to {high} (got {value:g})")
        checked[name] = value
    return checked


def check_images(uploads: list[Upload], limits: Limits, prepare: Preparer | None = None) -> list[CheckedImage]:
    """Every upload checked, in order; `prepare` is given each one decoded before the next is decoded."""
    if not uploads:
        raise InputError("images", "add at least one image")
    if len(uploads) > limits.max_images:
        raise InputError("images", f"{len(uploads)} images; the limit is {limits.max_images}", 413)
    total = sum(len(upload.data) for upload in uploads)
    if total > limits.max_request_bytes:
        raise InputError("images", f"{total / MB:.1f} MB in all; the limit is {megabytes(limits.max_request_bytes)}",
                         413)
    declared = sum(_declared_pixels(upload) for upload in uploads)  # headers only: before any full decode
    if declared > limits.max_total_pixels:
        raise InputError("images", f"{len(uploads)} images of {declared / 1e6:.1f} megapixels in all; the limit is "
                                   f"{limits.max_total_megapixels:g} megapixels a request", 413)
    return [check_image(upload, limits, prepare) for upload in uploads]


def _declared_pixels(upload: Upload) -> int:
    """Width × height as the file's header says (0 when it has none: `check_image` then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as image:
                return int(image.size[0] * image.size[1])
    except Exception:  # unreadable: refused with its own message by check_image
        return 0


# Browsers (and curl) write a file name into a multipart body with `"`, CR and LF percent-encoded, as the HTML
# standard says, and send the rest as it is: these three are turned back (a name really holding "%22" is shown
# with a `"`; which it was cannot be told apart).
_MULTIPART_ESCAPES = (("%22", '"'), ("%0D", "\r"), ("%0A", "\n"), ("%0d", "\r"), ("%0a", "\n"))


def clean_name(name: str | None) -> str:
    """An uploaded file's name as stored and shown: the multipart escapes of `"`, CR and LF undone, control
    characters (NUL, newlines, escapes) and unpaired surrogates dropped, at most NAME_MAX_CHARS; "image" when
    nothing is left. Only ever stored as text: files are named by their hash."""
    name = name or ""
    for escaped, plain in _MULTIPART_ESCAPES:
        name = name.replace(escaped, plain)
    kept = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp"))
    return kept.strip()[:NAME_MAX_CHARS] or "image"


def check_image(upload: Upload, limits: Limits, prepare: Preparer | None = None) -> CheckedImage:
    """Judge a file by its content: size, pixel count, a full decode; never by name or declared type.
    With `prepare`, that decode is the only one the server makes of the upload: at the size `prepare`
    asks for (a JPEG may be decoded at a fraction of its size, which checks it as fully), and handed
    to `prepare.add`; its pixels are let go when this returns."""
    name = clean_name(upload.name)
    field = f"images[{name}]"
    if len(upload.data) > limits.max_image_bytes:
        raise InputError(field, f"{name} is {len(upload.data) / MB:.1f} MB; the limit is "
                                f"{megabytes(limits.max_image_bytes)} per image", 413)
    if not upload.data:
        raise InputError(field, f"{name} is empty")
    image, (width, height) = _decoded(upload, limits, name, field, prepare)
    try:
        fmt = image.format or "PNG"
        frames = getattr(image, "n_frames", 1)
        turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
        if prepare is not None:
            prepare.add(name, upload.data, image, (width, height))
    except ImageError as exc:
        raise InputError(field, f"{name} could not be prepared for the models ({exc})") from None
    finally:
        image.close()
    note = f"{name} has {frames} frames: the first is used" if frames > 1 else None
    if turned:  # stored as taken, shown (by browsers and to the models) upright: its size as seen
        width, height = height, width
    return CheckedImage(name=name, data=upload.data, format=fmt, width=width, height=height, note=note)


def _decoded(upload: Upload, limits: Limits, name: str, field: str, prepare: Preparer | None
             ) -> tuple[Image.Image, tuple[int, int]]:
    """The upload opened and decoded (the caller closes it), and its size as stored; InputError when it
    cannot be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload.data))
            try:
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise InputError(field, f"{name} is {width}×{height} = {width * height / 1e6:.1f} megapixels; "
                                            f"the limit is {limits.max_pixels / 1e6:g} megapixels", 413)
                if prepare is not None and image.format == "JPEG":
                    image.draft(None, prepare.draft(width, height))
                image.load()  # a full decode: truncated and corrupt files fail here
            except BaseException:
                image.close()
                raise
            return image, (width, height)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(field, f"{name} decodes to more pixels than the limit of "
                                f"{limits.max_pixels / 1e6:g} megapixels", 413) from None
    except Image.UnidentifiedImageError:
        raise InputError(field, f"{name} is not a readable image: its content is not in an image format the "
                                "server reads") from None
    except Exception as exc:  # the decoder raises many kinds for broken files; none is named to people
        cut = "truncated" in str(exc).lower() or isinstance(exc, EOFError)
        raise InputError(field, f"{name} is not a readable image: the file is "
                                + ("cut short (truncated)" if cut else "damaged")) from None


def read_stored_image(data_dir: Path, sha256: str) -> bytes:
    """An image an earlier comparison stored, by its hash ("run again" and "retry" send hashes, not files).
    InputError: 422 for what is no SHA-256, 404 for an image not (or no longer) on this server."""
    try:
        return files.image_path(data_dir, sha256).read_bytes()
    except ValueError:
        raise InputError("images", f"reuse_images: {sha256[:80]!r} is not an image's SHA-256 (64 hex digits)") from None
    except FileNotFoundError:
        raise InputError("images", f"stored image {sha256[:12]}… is not on this server (any more): upload it "
                                   "again", 404) from None
