"""`vlm-playground users add NAME [--admin] | list | remove NAME`: the per-rater accounts of a users file.

The secret is read from standard input (its first line) or, at a terminal, asked for twice; never taken
as a flag, which would show it in `ps` and the shell's history."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from app.cli.errors import CommandError
from app.core.settings import Settings
from app.web.accounts import AccessError, check_name, hash_secret, read_users, write_users


def _users_file(args: argparse.Namespace) -> Path:
    path = args.users_file or Settings.from_args().users_file
    if path is None:
        raise CommandError("which users file? give --users-file PATH or set VLM_USERS_FILE")
    return Path(path)


def _existing(path: Path) -> dict[str, tuple[str, str]]:
    if not path.exists():
        return {}
    try:
        return read_users(path)
    except AccessError as exc:
        raise CommandError(str(exc)) from None


def read_secret(name: str) -> str:
    """The new secret: asked twice at a terminal, else the first line of standard input."""
    if sys.stdin.isatty():
        secret = getpass.getpass(f"secret for {name}: ")
        if getpass.getpass("the same again: ") != secret:
            raise CommandError("the two secrets differ; nothing was changed")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise CommandError("no secret given (type it when asked, or send it on standard input)")
    return secret


def cmd_users(args: argparse.Namespace) -> int:
    path = _users_file(args)
    users = _existing(path)
    if args.action == "list":
        for name, (role, _) in sorted(users.items()):
            print(f"{name}\t{role}")
        return 0
    if not args.name:
        raise CommandError(f"users {args.action} needs an account name")
    if args.action == "remove":
        if users.pop(args.name, None) is None:
            raise CommandError(f"{path} has no account {args.name!r}")
        write_users(path, users)
        print(f"removed {args.name} from {path}", file=sys.stderr)
        return 0
    try:
        name = check_name(args.name)
        hashed = hash_secret(read_secret(name))
    except AccessError as exc:
        raise CommandError(str(exc)) from None
    role = "admin" if args.admin else "rater"
    verb = "updated" if name in users else "added"
    users[name] = (role, hashed)
    write_users(path, users)
    print(f"{verb} {name} ({role}) in {path}", file=sys.stderr)
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the `users` command."""
    command = add("users", cmd_users, "Per-rater accounts: users add NAME [--admin], users list, users remove NAME.")
    command.add_argument("action", choices=["add", "list", "remove"])
    command.add_argument("name", nargs="?", help="the account (the rater name its ratings are recorded under)")
    command.add_argument("--admin", action="store_true", help="may export and override vote flags")
    command.add_argument("--users-file", type=Path, default=None, help="default: $VLM_USERS_FILE")
