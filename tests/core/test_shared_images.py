"""Prepared images shared with local workers: one PPM file per image, named by the SHA-256 of its
bytes, kept while requests use it; a worker reads only 64-hex names inside its own folder."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from app.core.images import ImageError
from app.core.protocol import ChatRequest, ImagePart, ProtocolError, chat_input, user_message
from app.core.shared_images import SharedImages, load_images, read_shared


def noise(size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.effect_noise(size, 60).convert("RGB")


def files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_a_shared_image_comes_back_with_the_same_pixels_named_by_the_hash_of_its_file(tmp_path):
    shared = SharedImages(tmp_path / "shared")
    image = noise((301, 7))  # an odd width: rows are written in strips
    name = shared.put(image)
    path = tmp_path / "shared" / f"{name}.ppm"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == name
    assert path.read_bytes().startswith(b"P6\n301 7\n255\n")
    loaded = read_shared(tmp_path / "shared", name)
    assert loaded.mode == "RGB" and loaded.size == image.size and loaded.tobytes() == image.tobytes()
    with Image.open(path) as standard:  # a plain binary PPM: any viewer opens it
        assert standard.tobytes() == image.tobytes()


def test_a_large_image_is_written_in_strips_and_read_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr("app.core.shared_images._STRIP_BYTES", 3 * 500 * 7)  # 7 rows a strip
    shared = SharedImages(tmp_path)
    image = noise((500, 50))
    assert read_shared(tmp_path, shared.put(image)).tobytes() == image.tobytes()


def test_one_file_per_image_kept_until_its_last_request_ends(tmp_path):
    shared = SharedImages(tmp_path / "shared")
    image = noise()
    first, second = shared.put(image), shared.put(image.copy())
    other = shared.put(noise())
    assert first == second != other
    assert files(tmp_path / "shared") == sorted([f"{first}.ppm", f"{other}.ppm"])  # no temp files left
    shared.release(first)
    assert f"{first}.ppm" in files(tmp_path / "shared")  # the other request still uses it
    shared.release(second)
    shared.release(other)
    assert files(tmp_path / "shared") == [] and shared.in_use() == {}
    shared.remove()
    assert not (tmp_path / "shared").exists()


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "A" * 64, "a" * 63, "a" * 65,
                                  "a" * 63 + "/", "", "a" * 64 + ".ppm"])
def test_a_worker_reads_no_name_that_is_not_64_lowercase_hex(tmp_path, name):
    with pytest.raises(ImageError, match="64 lowercase hex digits"):
        read_shared(tmp_path, name, "image 1")


def test_a_link_in_the_folder_is_not_followed(tmp_path):
    secret = tmp_path / "secret.ppm"
    secret.write_bytes(b"P6\n1 1\n255\n\x00\x00\x00")
    folder = tmp_path / "shared"
    folder.mkdir()
    name = "ab" * 32
    os.symlink(secret, folder / f"{name}.ppm")
    with pytest.raises(ImageError, match="image 1: the shared image abababababab… cannot be read"):
        read_shared(folder, name, "image 1")


@pytest.mark.parametrize(("content", "says"), [
    (b"P6\n4 4\n255\n" + bytes(40), "incomplete"),
    (b"\x89PNG\r\n\x1a\n" + bytes(60), "not a PPM of this playground's"),
    (b"P6\n0 4\n255\n", "not a PPM of this playground's"),
])
def test_a_broken_or_foreign_file_is_refused(tmp_path, content, says):
    name = "cd" * 32
    (tmp_path / f"{name}.ppm").write_bytes(content)
    with pytest.raises(ImageError, match=says):
        read_shared(tmp_path, name, "image 2")


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ImageError, match="image 1: no shared image 000000000000… in this worker's folder"):
        read_shared(tmp_path, "0" * 64, "image 1")


def request(url: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                               {"type": "text", "text": "hi"}]}])


def test_only_a_worker_accepts_shared_names_and_only_as_names():
    url = "vlm-image:sha256:" + "ef" * 32
    with pytest.raises(ProtocolError, match="only data: URLs"):  # the gateway: a client cannot name files
        chat_input(request(url))
    assert chat_input(request(url), shared=True).images == [ImagePart.shared_file("ef" * 32)]
    with pytest.raises(ProtocolError, match="64 lowercase hex digits .* never a path"):
        chat_input(request("vlm-image:sha256:../../etc/passwd"), shared=True)


def test_the_message_to_a_local_worker_names_the_file_and_holds_no_base64():
    part = ImagePart.shared_file("12" * 32)
    [message] = user_message("hi", [part])
    assert message["content"][0] == {"type": "image_url", "image_url": {"url": "vlm-image:sha256:" + "12" * 32}}


def test_a_data_url_is_encoded_once_however_many_models_receive_it(monkeypatch):
    import base64

    calls = []
    encode = base64.b64encode
    monkeypatch.setattr(base64, "b64encode", lambda data: calls.append(1) or encode(data))
    part = ImagePart(b"\x89PNG" + bytes(2000))
    assert part.data_url() == part.data_url() == part.url()
    assert len(calls) == 1


def test_load_images_decodes_data_and_reads_shared_files(tmp_path):
    image = noise()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    name = SharedImages(tmp_path).put(image)
    loaded = load_images([ImagePart(buffer.getvalue()), ImagePart.shared_file(name)], tmp_path)
    assert [each.tobytes() for each in loaded] == [image.tobytes()] * 2
    with pytest.raises(ImageError, match="image 1: this worker has no shared folder"):
        load_images([ImagePart.shared_file(name)], None)
