"""Images made no larger than a model uses, on the server, before anything is sent to its worker.

A 40-megapixel upload decodes to 120 MB of pixels in every worker it reaches, most of which the
model's own processor then throws away. Here each image is shrunk once per size a model needs
(never below what its family's processor uses; see `ImageUse`), so workers only ever receive
what they will use, and the answer's image note says what was done.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.compare.validation import CheckedImage
from app.core.catalog import ModelSpec
from app.core.images import shrink
from app.core.protocol import ImagePart


class Downsizer:
    """Shrinks a request's images for each model, reusing a result when two models need the same size."""

    def __init__(self, images: Sequence[CheckedImage]) -> None:
        self.images = list(images)
        self._done: dict[tuple[int, float], tuple[ImagePart, str | None]] = {}

    def for_model(self, spec: ModelSpec) -> tuple[list[ImagePart], str | None]:
        """The images as `spec` should receive them, and a note when any was shrunk."""
        use = spec.image_use
        parts: list[ImagePart] = []
        notes: list[str] = []
        for index, image in enumerate(self.images):
            scale = round(use.scale(image.width, image.height), 4)
            if scale >= 1:
                parts.append(ImagePart(image.data, image.mime))
                continue
            if (index, scale) not in self._done:
                shrunk = shrink(image.data, scale, image.name)
                (w0, h0), (w1, h1) = shrunk.before, shrunk.after
                self._done[index, scale] = (ImagePart(shrunk.data, shrunk.mime), f"{image.name} {w0}×{h0} → {w1}×{h1}")
            part, note = self._done[index, scale]
            parts.append(part)
            notes.append(note or "")
        if not notes:
            return parts, None
        return parts, f"downsized on the server to the most this model uses: {', '.join(notes)}"
