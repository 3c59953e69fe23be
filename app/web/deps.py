"""The services a request needs, typed: routes take them as `Annotated` dependencies, never from
`request.app.state` directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine

from app.compare.runner import ComparisonRunner
from app.core.catalog import Catalog
from app.core.settings import Settings
from app.evaluate.leaderboard import Cache as LeaderboardCache
from app.pool.pool import ModelPool
from app.web.accounts import Account, Accounts

RATER_MAX_CHARS = 200


@dataclass(frozen=True)
class Services:
    """Everything the app builds at start-up and routes use."""

    settings: Settings
    catalog: Catalog
    engine: Engine
    pool: ModelPool
    runner: ComparisonRunner
    reachability: dict[str, str | None]  # model id → why it cannot be loaded here (None: it can)
    leaderboards: LeaderboardCache = field(default_factory=LeaderboardCache)


def services(request: Request) -> Services:
    """The app's services (set by `create_app`'s start-up)."""
    found = request.app.state.services
    assert isinstance(found, Services)
    return found


def account_of(request: Request) -> Account | None:
    """The signed-in account (set by the security middleware when the playground has accounts), or None."""
    found = getattr(request.state, "account", None)
    return found if isinstance(found, Account) else None


def accounts_of(request: Request) -> Accounts | None:
    """The users file's accounts, or None when raters name themselves (set by `create_app`)."""
    found = getattr(request.app.state, "accounts", None)
    return found if isinstance(found, Accounts) else None


def admin_only(request: Request) -> None:
    """Refuse (403) a rater's account; without accounts every client may, as before."""
    account = account_of(request)
    if account is not None and not account.admin:
        raise HTTPException(403, f"this needs an admin account; {account.name} is a {account.role}")


def rater_of(request: Request, given: str | None = None) -> str:
    """The signed-in account's name when there are accounts (whatever name the request gives); else the
    rater named in the request, else the page's cookie, else the default name.

    Control characters (NUL among them, which PostgreSQL text cannot hold) are dropped."""
    account = account_of(request)
    if account is not None:
        return account.name
    cookie = unquote(request.cookies.get("rater") or "")  # the page stores it percent-encoded
    name = "".join(ch for ch in (given or cookie) if ch.isprintable()).strip()[:RATER_MAX_CHARS]
    return name or services(request).settings.default_rater


def client_of(request: Request) -> str:
    """Who is asking, for fair turns on a busy model: the signed-in account, else the connection's
    address (a name given in the request would let one client pose as many)."""
    account = account_of(request)
    if account is not None:
        return f"account {account.name}"
    return f"address {request.client.host if request.client else 'unknown'}"


# The dependencies are coroutines only so that FastAPI calls them on the event loop: a plain `def`
# dependency is run in the thread pool, a thread hop per dependency per request for an attribute read.


async def _services(request: Request) -> Services:
    return services(request)


async def _settings(request: Request) -> Settings:
    return services(request).settings


async def _catalog(request: Request) -> Catalog:
    return services(request).catalog


async def _engine(request: Request) -> Engine:
    return services(request).engine


async def _pool(request: Request) -> ModelPool:
    return services(request).pool


async def _runner(request: Request) -> ComparisonRunner:
    return services(request).runner


async def _rater(request: Request) -> str:
    return rater_of(request)


async def _accounts(request: Request) -> Accounts | None:
    return accounts_of(request)


async def _admin_only(request: Request) -> None:
    admin_only(request)


ServicesDep = Annotated[Services, Depends(_services)]
SettingsDep = Annotated[Settings, Depends(_settings)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
EngineDep = Annotated[Engine, Depends(_engine)]  # the store: storage functions take the engine
PoolDep = Annotated[ModelPool, Depends(_pool)]
RunnerDep = Annotated[ComparisonRunner, Depends(_runner)]
RaterDep = Annotated[str, Depends(_rater)]  # the account's name, else the cookie's, else the default name
AccountsDep = Annotated[Accounts | None, Depends(_accounts)]
AdminOnly = Depends(_admin_only)
