"""Per-rater accounts: the users file (`name:role:argon2hash` a line) and checking a credential against it.

Verifying an argon2 hash costs tens of milliseconds, so successful checks are remembered in memory,
keyed by a SHA-256 of the credential; the file is read again whenever it changes on disk, which
forgets them all (a removed user is locked out at their next request).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("rater", "admin")
NAME_MAX_CHARS = 200
MIN_SECRET_CHARS = 8
CACHE_SIZE = 4096
HASHING_AT_ONCE = 2  # argon2 checks of new credentials at once; more wait (each wrong guess costs CPU)
_hasher = PasswordHasher()


class AccessError(ValueError):
    """Access settings that cannot work (a missing token file, a broken users file…), in one line."""


@dataclass(frozen=True)
class Account:
    """Who is signed in: the rater name every rating and vote is recorded under, and the role."""

    name: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    """A usable account name, or AccessError saying what is wrong with it."""
    if not name or name != name.strip():
        raise AccessError("an account name must be non-empty, without spaces around it")
    if len(name) > NAME_MAX_CHARS:
        raise AccessError(f"an account name may have at most {NAME_MAX_CHARS} characters")
    if ":" in name or not name.isprintable():
        raise AccessError(f"account name {name[:40]!r} may not contain ':' or control characters")
    return name


def hash_secret(secret: str) -> str:
    """The argon2id hash of a secret, for the users file."""
    if len(secret) < MIN_SECRET_CHARS:
        raise AccessError(f"a secret needs at least {MIN_SECRET_CHARS} characters")
    return _hasher.hash(secret)


def parse_users(text: str, path: Path) -> dict[str, tuple[str, str]]:
    """name → (role, hash) from a users file's text; blank lines and `#` comments are skipped."""
    found: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, hashed = rest.partition(":")
        if role not in ROLES or not hashed.startswith("$argon2"):
            raise AccessError(f"{path}, line {number}: expected name:role:argon2-hash with role "
                              f"{' or '.join(ROLES)}")
        found[check_name(name)] = (role, hashed.strip())
    return found


def read_users(path: Path) -> dict[str, tuple[str, str]]:
    """The accounts in a users file; AccessError naming the file when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AccessError(f"users file {path} does not exist (create it with "
                          f"`vlm-playground users add NAME --users-file {path}`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(f"users file {path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_users(text, path)


def write_users(path: Path, users: dict[str, tuple[str, str]]) -> None:
    """Replace the users file atomically (a reader sees the old file or the new one, never half), mode 600."""
    lines = "".join(f"{name}:{role}:{hashed}\n" for name, (role, hashed) in sorted(users.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def split_credential(credential: str) -> tuple[str, str] | None:
    """`NAME:SECRET` → (name, secret); the secret may contain ':' (a name may not)."""
    name, colon, secret = credential.partition(":")
    return (name, secret) if colon and name and secret else None


class Accounts:
    """The accounts of one users file, re-read when it changes; checks credentials."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, tuple[str, str]] = {}
        self._verified: dict[bytes, Account] = {}
        self._generation = 0  # counts re-reads: a check begun before one is not remembered after it
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)
        self._decoy = _hasher.hash(os.urandom(16).hex())  # unknown names cost as much as wrong secrets
        if not read_users(path):
            raise AccessError(f"users file {path} has no accounts: nobody could sign in "
                              "(add one with `vlm-playground users add NAME`)")
        self._refresh()

    def _refresh(self) -> None:
        """Re-read the file when its modification time, size or inode changed; forget verified credentials."""
        try:
            info = self.path.stat()
            stamp: tuple[int, int, int] | None = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if stamp == self._stamp and stamp is not None:
                return
        users = read_users(self.path) if stamp is not None else {}
        with self._lock:
            self._stamp, self._users, self._verified = stamp, users, {}
            self._generation += 1

    def cached(self, credential: str) -> Account | None:
        """The account of a credential verified before (and unchanged since), without hashing; else None."""
        try:
            self._refresh()
        except AccessError:
            with self._lock:  # a file broken while running locks everyone out until it is fixed
                self._users, self._verified, self._stamp = {}, {}, None
                self._generation += 1
            return None
        with self._lock:
            return self._verified.get(_digest(credential))

    async def check(self, credential: str) -> Account | None:
        """`verify` for the event loop: cached answers at once, new credentials hashed in a thread, a few at once."""
        found = self.cached(credential)
        if found is not None:
            return found
        async with self._hashing:
            return await asyncio.to_thread(self.verify, credential)

    def verify(self, credential: str) -> Account | None:
        """The account whose `NAME:SECRET` this is, or None. Blocking (argon2) unless cached."""
        found = self.cached(credential)
        if found is not None:
            return found
        parts = split_credential(credential)
        with self._lock:
            entry = self._users.get(parts[0]) if parts else None
            generation = self._generation
        try:
            _hasher.verify(entry[1] if entry else self._decoy, parts[1] if parts else credential)
        except (VerificationError, InvalidHashError):
            return None
        if entry is None or parts is None:
            return None
        account = Account(parts[0], entry[0])
        with self._lock:
            if generation != self._generation:  # the file changed while hashing: check again against it
                return None if self._users.get(account.name) != entry else account
            if len(self._verified) >= CACHE_SIZE:
                self._verified.clear()
            self._verified[_digest(credential)] = account
        return account


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest()
