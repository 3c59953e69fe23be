"""Images decoded once, encoded once: the check's decode is the only one the server makes of an
upload, whatever the number of models; local workers get prepared files (no base64), remote
endpoints data: URLs encoded once; a worker answers the same from either, and reads nothing outside
its folder."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from app.compare.downsize import Downsizer
from app.compare.runner import ComparisonRunner
from app.compare.validation import InputError, Upload, check_images
from app.core.catalog import ModelSpec, parse_catalog
from app.core.images import decode_image
from app.core.protocol import ImagePart, user_message
from app.core.settings import Limits
from app.core.shared_images import SharedImages, read_shared


def local(model_id: str, family: str) -> ModelSpec:
    return ModelSpec(id=model_id, repo=f"org/{model_id}", family=family, min_gpu_gb=1)


def remote(model_id: str, family: str | None = None) -> ModelSpec:
    return ModelSpec(id=model_id, endpoint="http://127.0.0.1:9/v1", family=family)


LLAVA = local("llava-like", "llava")  # shortest side 336
PALIGEMMA = local("paligemma-like", "paligemma")  # shortest side 448
IDEFICS = local("idefics-like", "idefics3")  # longest side 2048: all of a smaller image


def photo(size: tuple[int, int], fmt: str = "JPEG", **save: object) -> bytes:
    """Smooth colour fields plus noise, as a photo has."""
    fields = Image.effect_noise((size[0] // 40 + 1, size[1] // 40 + 1), 80).convert("RGB").resize(size)
    image = Image.blend(fields, Image.effect_noise(size, 30).convert("RGB"), 0.2)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


class Counted:
    """Pillow decodes (`ImageFile.load` calls with data left to decode: later calls are no-ops) and the
    sizes they decoded at, and base64 encodes over 1 kB."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoded: list[tuple[int, int]] = []
        self.encodes = 0
        load, encode = ImageFile.ImageFile.load, base64.b64encode

        def counted_load(image: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
            decodes = bool(image.tile)
            result = load(image)
            if decodes:
                self.decoded.append(image.size)
            return result

        def counted_encode(data: bytes, *args: object) -> bytes:
            self.encodes += len(data) > 1024
            return encode(data, *args)

        monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
        monkeypatch.setattr(base64, "b64encode", counted_encode)


def prepared(specs: list[ModelSpec], uploads: list[Upload], shared: SharedImages | None) -> Downsizer:
    downsizer = Downsizer(specs, shared)
    check_images(uploads, Limits(), prepare=downsizer)
    return downsizer


def test_three_local_models_cost_one_decode_and_no_base64(tmp_path, monkeypatch):
    shared = SharedImages(tmp_path / "shared")
    upload = Upload("photo.png", photo((1200, 900), "PNG"))
    qwen = local("qwen-like", "qwen2_vl")  # about one megapixel
    counted = Counted(monkeypatch)
    downsizer = prepared([LLAVA, qwen, IDEFICS], [upload], shared)
    assert counted.decoded == [(1200, 900)]  # one decode, at full size: one model uses all of it
    sizes = {}
    for spec in (LLAVA, qwen, IDEFICS):
        parts, note = downsizer.for_model(spec)
        [part] = parts
        assert part.shared and not part.data
        assert "base64" not in str(user_message("hi", parts))
        sizes[spec.id] = read_shared(shared.folder, part.shared).size
        assert (note is None) == (spec is IDEFICS)
    assert sizes == {"llava-like": (448, 336), "qwen-like": (1157, 868), "idefics-like": (1200, 900)}
    assert counted.encodes == 0
    assert len(list(shared.folder.iterdir())) == 3
    downsizer.release()
    assert list(shared.folder.iterdir()) == []


def test_a_jpeg_is_decoded_once_at_the_largest_size_its_models_need(tmp_path, monkeypatch):
    shared = SharedImages(tmp_path / "shared")
    counted = Counted(monkeypatch)
    downsizer = prepared([LLAVA, PALIGEMMA], [Upload("photo.jpg", photo((2000, 1500), quality=92))], shared)
    assert counted.decoded == [(1000, 750)]  # at 1/2: the most either model needs is 597×448
    assert downsizer.for_model(LLAVA)[1] == ("downsized on the server to the most this model uses: "
                                             "photo.jpg 2000×1500 → 448×336")
    assert downsizer.for_model(PALIGEMMA)[1].endswith("photo.jpg 2000×1500 → 597×448")
    [part] = downsizer.for_model(PALIGEMMA)[0]
    assert read_shared(shared.folder, part.shared).size == (597, 448)


def test_a_jpeg_decoded_at_a_draft_scale_is_still_judged_whole(tmp_path):
    data = photo((2000, 1500), quality=92)
    shared = SharedImages(tmp_path / "shared")
    with pytest.raises(InputError) as caught:
        prepared([LLAVA], [Upload("cut.jpg", data[: len(data) * 2 // 3])], shared)
    assert caught.value.status_code == 422 and "truncated" in caught.value.message
    assert not shared.folder.exists() or list(shared.folder.iterdir()) == []


def test_remote_models_get_data_urls_encoded_once_in_the_checking_thread(tmp_path, monkeypatch):
    shared = SharedImages(tmp_path / "shared")
    data = photo((1200, 900), quality=90)
    counted = Counted(monkeypatch)
    first, second, whole = remote("remote-a", "llava"), remote("remote-b", "llava"), remote("remote-c")
    downsizer = prepared([first, second, whole, LLAVA], [Upload("photo.jpg", data)], shared)
    assert len(counted.decoded) == 1
    assert counted.encodes == 2  # the 448×336 JPEG for both llava endpoints, the upload as it came for the other
    [a], [b], [c] = (downsizer.for_model(spec)[0] for spec in (first, second, whole))
    assert a is b and a.shared is None and a.mime == "image/jpeg"
    assert decode_image(a.data).size == (448, 336)
    assert c.data == data and c.mime == "image/jpeg"
    for spec in (first, second, whole):
        downsizer.for_model(spec)[0][0].url()
    assert counted.encodes == 2  # sending encodes nothing more
    [mine] = downsizer.for_model(LLAVA)[0]
    assert mine.shared is not None


def test_without_a_shared_folder_local_workers_get_data_urls_as_before():
    data = photo((1200, 900), "PNG")
    downsizer = prepared([LLAVA, IDEFICS], [Upload("photo.png", data)], None)
    [shrunk], note = downsizer.for_model(LLAVA)
    assert shrunk.mime == "image/png" and decode_image(shrunk.data).size == (448, 336) and note
    [whole], note = downsizer.for_model(IDEFICS)
    assert whole.data == data and note is None


def test_an_upright_turn_from_exif_is_applied_and_the_note_gives_the_size_as_shown(tmp_path):
    image = Image.new("RGB", (800, 400), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 400, 400))  # blue on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display: the stored left edge becomes the top
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    shared = SharedImages(tmp_path / "shared")
    downsizer = prepared([LLAVA, IDEFICS], [Upload("phone.jpg", buffer.getvalue())], shared)
    [part], note = downsizer.for_model(LLAVA)
    assert note and note.endswith("phone.jpg 400×800 → 336×672")
    small = read_shared(shared.folder, part.shared)
    [whole_part], _ = downsizer.for_model(IDEFICS)
    whole = read_shared(shared.folder, whole_part.shared)
    assert small.size == (336, 672) and whole.size == (400, 800)
    assert whole.tobytes() == decode_image(buffer.getvalue()).tobytes()  # as a worker decodes it itself
    for shown in (small, whole):
        red, green, blue = shown.getpixel((shown.width // 2, 10))
        assert blue > 200 and red < 60


def test_a_refused_request_leaves_no_shared_file(tmp_path):
    catalog = parse_catalog({"models": [LLAVA.model_dump(exclude_none=True)]})
    shared = SharedImages(tmp_path / "shared")
    runner = ComparisonRunner(engine=None, data_dir=tmp_path, catalog=catalog, pool=None,  # type: ignore[arg-type]
                              limits=Limits(), shared=shared)
    good = Upload("good.png", photo((800, 600), "PNG"))
    with pytest.raises(InputError, match="bad.png"):
        runner.check("hi", [good, Upload("bad.png", b"\x89PNG\r\n\x1a\n" + os.urandom(300))], [LLAVA.id], {})
    with pytest.raises(InputError, match="unknown model"):  # the images' own refusals come first, as before
        runner.check("hi", [good], ["nope"], {})
    assert shared.in_use() == {} and list(shared.folder.iterdir()) == []


# ---------------------------------------------------------------- a real worker


@pytest.fixture
async def worker(tiny_catalog, tmp_path: Path):
    """A tiny Qwen2-VL worker given a shared folder, as the server starts its workers."""
    from app.core.shared_images import SHARED_ENV
    from app.pool.launcher import ProcessLauncher
    from app.pool.pool import ModelPool
    from app.pool.sizes import SizeBook

    shared = SharedImages(tmp_path / "shared")
    launcher = ProcessLauncher(tmp_path / "logs", load_timeout_s=120, env={SHARED_ENV: str(shared.folder)})
    pool = ModelPool(tiny_catalog, launcher, budget_gb=2.0, sizes=SizeBook(), wait_timeout_s=60)
    yield pool, shared
    await pool.close()


async def answer(pool, part: ImagePart) -> str:
    from app.core.generation import Finish, GenerationParams

    pieces = []
    async with pool.lease("tiny-qwen2-vl") as backend:
        async for piece in backend.stream("What is in the picture?", [part],
                                          GenerationParams(max_new_tokens=8, temperature=1.0, seed=7)):
            if not isinstance(piece, Finish):
                pieces.append(piece)
    return "".join(pieces)


@pytest.mark.slow
async def test_a_worker_answers_the_same_from_a_data_url_or_a_shared_file(worker):
    pool, shared = worker
    image = Image.effect_noise((90, 60), 70).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    by_url = await answer(pool, ImagePart(buffer.getvalue(), "image/png"))
    by_file = await answer(pool, ImagePart.shared_file(shared.put(image)))
    assert by_url and by_file == by_url


@pytest.mark.slow
async def test_a_worker_refuses_a_reference_outside_its_folder_with_a_400(worker, tmp_path):
    from app.pool.client import BackendError

    pool, shared = worker
    shared.folder.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside.ppm"
    outside.write_bytes(b"P6\n1 1\n255\n\x00\x00\x00")
    linked = "ab" * 32
    os.symlink(outside, shared.folder / f"{linked}.ppm")
    cases = [("../outside", "64 lowercase hex digits"), (str(outside), "64 lowercase hex digits"),
             ("0" * 64, "no shared image 000000000000"), (linked, "cannot be read")]
    for name, says in cases:
        with pytest.raises(BackendError) as caught:
            await answer(pool, ImagePart(b"", "image/x-portable-pixmap", name))
        assert caught.value.status == 400, (name, caught.value)
        assert says in str(caught.value), (name, caught.value)
    assert await answer(pool, ImagePart.shared_file(shared.put(Image.new("RGB", (40, 30), "red"))))
