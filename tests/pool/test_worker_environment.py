"""Workers run model code (some of it downloaded): they must not inherit the playground's token, users file
or database URL, and no token may show in `ps` (issue 12, defect 6). Real server, real worker, /proc."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.pool.environment import worker_environment
from tests.helpers import LiveServer, png_bytes

pytestmark = pytest.mark.slow


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if item)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def test_a_worker_gets_its_own_token_and_none_of_the_playgrounds_secrets(tiny_catalog_path: Path,
                                                                         tmp_path: Path) -> None:
    token, database = "playground-token-1234", f"sqlite:///{tmp_path / 'secret-password.db'}"
    live = LiveServer(tiny_catalog_path, tmp_path / "data",
                      env={"VLM_AUTH_TOKEN": token, "DATABASE_URL": database, "VLM_DEFAULT_RATER": "someone"})
    try:
        headers = {"Authorization": f"Bearer {token}"}
        made = httpx.post(f"{live.url}/api/comparisons", headers=headers, timeout=120,
                          data={"prompt": "Colour?", "models": "tiny-qwen2-vl", "max_new_tokens": "2"},
                          files=[("images", ("a.png", png_bytes((1, 2, 3)), "image/png"))])
        assert made.status_code == 201 and made.json()["outputs"][0]["status"] == "done", made.text
        (worker,) = httpx.get(f"{live.url}/api/pool", headers=headers).json()["resident"]
        seen = environ(worker["pid"])
        assert set(seen) & {"VLM_AUTH_TOKEN", "DATABASE_URL", "VLM_DEFAULT_RATER"} == set()
        assert token not in "".join(seen.values()) and "secret-password" not in "".join(seen.values())
        # its own token, and the folder of the images its server prepares for it: no other setting
        assert sorted(name for name in seen if name.startswith("VLM_")) == ["VLM_SHARED_IMAGES", "VLM_WORKER_TOKEN"]
        assert Path(seen["VLM_SHARED_IMAGES"]).parent == (tmp_path / "data" / "shared").resolve()
        assert seen["VLM_WORKER_TOKEN"] != token
        assert token not in cmdline(worker["pid"]) and seen["VLM_WORKER_TOKEN"] not in cmdline(worker["pid"])
        assert token not in cmdline(live.process.pid)
        assert environ(live.process.pid)["DATABASE_URL"] == database  # the server itself still has it
    finally:
        live.stop()


def test_the_servers_command_line_names_the_token_file_not_the_token(tiny_catalog_path: Path,
                                                                    tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-a-file-5678\n")
    live = LiveServer(tiny_catalog_path, tmp_path / "data", extra=["--auth-token-file", str(path)])
    try:
        assert str(path) in cmdline(live.process.pid) and "from-a-file-5678" not in cmdline(live.process.pid)
        assert httpx.get(f"{live.url}/api/pool").status_code == 401
        right = {"Authorization": "Bearer from-a-file-5678"}
        assert httpx.get(f"{live.url}/api/pool", headers=right).status_code == 200
    finally:
        live.stop()


def test_every_playground_variable_is_left_out_but_what_a_worker_reads() -> None:
    given = {"VLM_AUTH_TOKEN": "t", "VLM_AUTH_TOKEN_FILE": "/f", "VLM_USERS_FILE": "/u", "DATABASE_URL": "postgresql://u:pw@h/db",
             "VLM_DATA_DIR": "/d", "VLM_ADAPTER_MODULES": "x=tests.fakes.faulty", "HF_TOKEN": "hf", "PATH": "/bin",
             "CUDA_VISIBLE_DEVICES": "0"}
    assert worker_environment(given) == {"VLM_ADAPTER_MODULES": "x=tests.fakes.faulty", "HF_TOKEN": "hf",
                                         "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0"}
