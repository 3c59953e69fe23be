"""`vlm-playground users` and the users file at start-up, as a person runs them: real subprocesses."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from argon2 import PasswordHasher

from tests.helpers import ROOT


def cli(*args: str, secret: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=secret, capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", **(env or {})})


def test_add_list_remove_write_the_file_atomically_with_argon2_hashes(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "users"
    added = cli("users", "add", "alice", "--users-file", str(path), secret="a;b c=d\"é long\n")
    assert added.returncode == 0 and added.stderr.strip() == f"added alice (rater) in {path}"
    assert cli("users", "add", "root", "--admin", secret="root-secret-99\n",
               env={"VLM_USERS_FILE": str(path)}).returncode == 0
    lines = path.read_text().splitlines()
    assert [line.split(":")[:2] for line in lines] == [["alice", "rater"], ["root", "admin"]]
    hashed = lines[0].split(":", 2)[2]
    assert hashed.startswith("$argon2id$") and PasswordHasher().verify(hashed, 'a;b c=d"é long')
    assert "long" not in path.read_text()  # only the hash is kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["users"]  # no temporary file left behind
    listed = cli("users", "list", "--users-file", str(path))
    assert listed.stdout.splitlines() == ["alice\trater", "root\tadmin"]
    updated = cli("users", "add", "alice", "--admin", "--users-file", str(path), secret="a-new-secret\n")
    assert updated.stderr.strip() == f"updated alice (admin) in {path}"
    assert cli("users", "remove", "root", "--users-file", str(path)).returncode == 0
    assert cli("users", "list", "--users-file", str(path)).stdout.splitlines() == ["alice\tadmin"]


def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "users"
    cases = [
        (("users", "add", "bob", "--users-file", str(path)), "\n", "error: no secret given"),
        (("users", "add", "bob", "--users-file", str(path)), "short\n", "error: a secret needs at least 8 characters"),
        (("users", "add", "bo:b", "--users-file", str(path)), "long-enough\n",
         "error: account name 'bo:b' may not contain ':' or control characters"),
        (("users", "remove", "carol", "--users-file", str(path)), None, f"error: {path} has no account 'carol'"),
        (("users", "add", "bob"), "long-enough\n",
         "error: which users file? give --users-file PATH or set VLM_USERS_FILE"),
    ]
    for args, secret, message in cases:
        result = cli(*args, secret=secret)
        assert result.returncode == 2 and result.stderr.strip().startswith(message), result.stderr
        assert "Traceback" not in result.stderr
    assert not path.exists()


def test_the_secret_is_never_a_flag(tmp_path: Path) -> None:
    result = cli("users", "add", "bob", "--secret", "x", "--users-file", str(tmp_path / "users"))
    assert result.returncode == 2 and "unrecognized arguments: --secret" in result.stderr


def test_a_users_file_that_cannot_work_stops_the_server_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("alice:rater:$argon2id$ok\nbob:superuser:$argon2id$x\n")
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    token = tmp_path / "token"
    token.write_text("shared\n")
    cases = [
        (["--users-file", str(tmp_path / "missing")], f"users file {tmp_path / 'missing'} does not exist"),
        (["--users-file", str(broken)], f"{broken}, line 2: expected name:role:argon2-hash with role rater or admin"),
        (["--users-file", str(empty)], f"users file {empty} has no accounts: nobody could sign in"),
        (["--users-file", str(broken), "--auth-token-file", str(token)], "pick one way in"),
    ]
    for args, message in cases:
        result = cli("serve", "--data-dir", str(tmp_path / "data"), *args)
        assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    env_both = cli("serve", "--data-dir", str(tmp_path / "data"), "--users-file", str(empty),
                   env={"VLM_AUTH_TOKEN": "shared"})
    assert env_both.returncode == 2 and "pick one way in" in env_both.stderr
