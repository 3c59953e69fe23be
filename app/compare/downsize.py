"""Images made ready for each model from one decode, on the server, before anything is sent to a worker.

A 40-megapixel upload decodes to 120 MB of pixels in every worker it reaches, most of which the
model's own processor then throws away. Here each upload is decoded once, by the check that judges
it (`check_images(..., prepare=downsizer)`): a JPEG at the largest size any of the request's models
needs (its DCT scaling decodes at 1/2, 1/4 or 1/8, never below, and reads and checks every byte as a
full decode does), anything else at full size. From that one decode it is shrunk once per size a
model needs (never below what its family's processor uses; see `ImageUse`) and normalised as every
adapter does (orientation, RGB); its pixels are let go before the next upload is decoded.

A local worker gets each prepared image as a file in the server's shared folder, named by its hash
(`app.core.shared_images`): it loads it with a copy, and nothing is base64-encoded for it. A remote
endpoint (or a worker without a shared folder) gets a data: URL, encoded once however many models
receive it: the upload as it came when the model uses all of it, else the shrunk image as JPEG
(quality 95) when it came as JPEG, else PNG, so a lossless upload stays lossless. The answer's image
note says what was shrunk.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import ExifTags, Image

from app.core.catalog import ModelSpec
from app.core.images import sized_versions
from app.core.protocol import ImagePart
from app.core.shared_images import SharedImages
from app.storage.files import DiskFull


@dataclass
class _Upload:
    """One upload, ready at each scale its models need."""

    name: str
    original: ImagePart  # as it came, for data: URLs to models that use all of it
    scales: dict[str, float] = field(default_factory=dict)  # model id → its scale (1.0: the whole image)
    shared: dict[float, str] = field(default_factory=dict)  # scale → shared file name
    inline: dict[float, ImagePart] = field(default_factory=dict)  # scale → encoded shrunk image
    notes: dict[float, str] = field(default_factory=dict)  # scale → "name W×H → w×h"


class Downsizer:
    """A request's images for each of its models; a size two models share is made once."""

    def __init__(self, specs: Sequence[ModelSpec], shared: SharedImages | None = None) -> None:
        self.specs = {spec.id: spec for spec in specs}
        self.shared = shared
        self.uploads: list[_Upload] = []

    def sends_files(self, spec: ModelSpec) -> bool:
        """Whether `spec` gets shared files (a local worker of a server with a shared folder)."""
        return self.shared is not None and not spec.is_remote

    def _scales(self, width: int, height: int) -> dict[str, float]:
        """Each model's scale for an image of width×height (1.0: all of it)."""
        return {spec.id: min(1.0, round(spec.image_use.scale(width, height), 4)) for spec in self.specs.values()}

    def _needed(self, scales: dict[str, float]) -> tuple[set[float], set[float]]:
        """The scales to write as shared files (every local worker's), and those to encode for data: URLs
        (a shrunk image for a remote model; one that uses all of an image gets the upload as it came)."""
        files = {scale for model, scale in scales.items() if self.sends_files(self.specs[model])}
        inline = {scale for model, scale in scales.items() if scale < 1 and not self.sends_files(self.specs[model])}
        return files, inline

    def draft(self, width: int, height: int) -> tuple[int, int]:
        """The largest size a model needs; (1, 1) when none needs pixels (the decode only checks)."""
        largest = max(set.union(*self._needed(self._scales(width, height))), default=0.0)
        return max(1, round(width * largest)), max(1, round(height * largest))

    def add(self, name: str, data: bytes, image: Image.Image, size: tuple[int, int]) -> None:
        """Prepare one upload for every model, from its decoded image (loaded, as stored, perhaps at a
        JPEG draft scale of `size`; see `check_image`). Called in the checking thread, once per upload,
        in order."""
        width, height = size
        mime = Image.MIME.get((image.format or "").upper(), "application/octet-stream")
        upload = _Upload(name, ImagePart(data, mime), self._scales(width, height))
        self.uploads.append(upload)
        files, inline = self._needed(upload.scales)
        shown = f"{height}×{width}" if _turned(image) else f"{width}×{height}"  # as displayed
        for scale, version in sized_versions(image, files | inline, size).items():
            if scale < 1:
                upload.notes[scale] = f"{name} {shown} → {version.width}×{version.height}"
            if scale in files:
                upload.shared[scale] = self._put(version)
            if scale in inline:
                upload.inline[scale] = _encoded(version, as_jpeg=image.format == "JPEG")
        if any(not self.sends_files(self.specs[model]) and scale >= 1 for model, scale in upload.scales.items()):
            upload.original.data_url()  # encoded here, in the checking thread, not on the event loop

    def _put(self, version: Image.Image) -> str:
        assert self.shared is not None
        try:
            return self.shared.put(version)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(self.shared.folder, exc.strerror or "no space left") from None
            raise

    def for_model(self, spec: ModelSpec) -> tuple[list[ImagePart], str | None]:
        """The images as `spec` should receive them, and a note when any was shrunk."""
        parts: list[ImagePart] = []
        notes: list[str] = []
        for upload in self.uploads:
            scale = upload.scales[spec.id]
            if self.sends_files(spec):
                parts.append(ImagePart.shared_file(upload.shared[scale]))
            else:
                parts.append(upload.inline[scale] if scale < 1 else upload.original)
            if scale < 1:
                notes.append(upload.notes[scale])
        if not notes:
            return parts, None
        return parts, f"downsized on the server to the most this model uses: {', '.join(notes)}"

    def release(self) -> None:
        """The request is over: its shared files may go (once no other request uses them)."""
        if self.shared is not None:
            for upload in self.uploads:
                for name in upload.shared.values():
                    self.shared.release(name)
        self.uploads = []


def _turned(image: Image.Image) -> bool:
    """Whether the image's EXIF orientation turns it by 90° to display it."""
    return image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)


def _encoded(image: Image.Image, as_jpeg: bool) -> ImagePart:
    out = io.BytesIO()
    if as_jpeg:
        image.save(out, format="JPEG", quality=95)
    else:
        image.save(out, format="PNG", compress_level=1)
    part = ImagePart(out.getvalue(), "image/jpeg" if as_jpeg else "image/png")
    part.data_url()  # encoded once, here in the checking thread
    return part

