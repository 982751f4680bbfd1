"""API keys: creation, authentication and revocation.

A key reads `eva_<prefix>_<secret>`. The prefix is stored in clear to find the row; the secret
is kept only as an HMAC-SHA256 keyed with API_KEY_HASH_SECRET and compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts import asyncdb
from accounts.errors import AuthenticationFailed, EvaError, InvalidInput, NotFound, PermissionDenied
from accounts.models import ApiKey, Scope
from accounts.revocation import REVOKED_API_KEY, credentials_revoke, key_credential

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger("accounts.api_keys")

KEY_PREFIX = "eva"
PREFIX_BYTES = 6  # 12 hex characters: collisions are retried on create
SECRET_BYTES = 32
ALL_SCOPES = tuple(choice.value for choice in Scope)


def _hash_secret(secret: str) -> str:
    return hmac.new(settings.API_KEY_HASH_SECRET.encode(), secret.encode(), hashlib.sha256).hexdigest()


# What api_key_create makes (a hex prefix, a URL-safe secret without "_"), with room to spare.
# Anything else never reaches the database: a NUL byte, for one, fails a Postgres query but
# not a SQLite one.
_KEY_PATTERN = re.compile(rf"{KEY_PREFIX}_([A-Za-z0-9]{{1,16}})_([A-Za-z0-9-]{{1,128}})")


def _split_key(raw_key: str) -> tuple[str, str]:
    match = _KEY_PATTERN.fullmatch(raw_key.strip()) if isinstance(raw_key, str) else None
    if match is None:
        raise AuthenticationFailed("The API key is malformed.", code="invalid_api_key")
    return match[1], match[2]


def parse_scopes(scopes: Iterable[str] | str) -> list[str]:
    """Normalise `chat,tts` or a list into a sorted list of known scopes."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    cleaned = sorted({item.strip().lower() for item in items if item and item.strip()})
    unknown = [item for item in cleaned if item not in ALL_SCOPES]
    if unknown:
        raise InvalidInput(
            f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(ALL_SCOPES)}.", code="invalid_scope"
        )
    if not cleaned:
        raise InvalidInput("A key needs at least one scope.", code="invalid_scope")
    return cleaned


def api_key_create(
    *, owner: AbstractBaseUser, name: str, scopes: Iterable[str] | str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key; return the row and the plaintext key, which is never available again."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("A key needs a name of 1 to 100 characters.", code="invalid_name")
    scope_list = parse_scopes(scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at must be in the future.", code="invalid_expiry")
    secret = secrets.token_urlsafe(SECRET_BYTES).replace("_", "-")
    for _ in range(5):
        prefix = secrets.token_hex(PREFIX_BYTES)
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    key = ApiKey.objects.create(
        owner=cast("User", owner),  # the stubs type the relation with Django's default user model
        name=name,
        prefix=prefix,
        hashed_secret=_hash_secret(secret),
        scopes=scope_list,
        expires_at=expires_at,
    )
    return key, f"{KEY_PREFIX}_{prefix}_{secret}"


def api_key_authenticate(*, raw_key: str | None, scope: str | None = None) -> ApiKey:
    """Return the active key for `raw_key` or raise AuthenticationFailed / PermissionDenied."""
    prefix, secret = _split_key(_required(raw_key))
    now = timezone.now()
    key = _verified(ApiKey.objects.select_related("owner").filter(prefix=prefix).first(), secret, scope, now)
    _touch_last_used(key, now=now)
    return key


async def api_key_authenticate_async(*, raw_key: str | None, scope: str | None = None) -> ApiKey:
    """api_key_authenticate for async views: on Postgres, two plain statements on the event loop
    (accounts.asyncdb) instead of the ORM in a thread; the same checks and errors."""
    if not asyncdb.async_db_enabled():
        return await database_sync_to_async(api_key_authenticate)(raw_key=raw_key, scope=scope)
    prefix, secret = _split_key(_required(raw_key))
    rows = await asyncdb.execute(_KEY_WITH_OWNER_SQL, [prefix])
    now = timezone.now()
    key = _verified(_key_from_row(rows[0]) if rows else None, secret, scope, now)
    if _needs_touch(key, now):
        await asyncdb.execute(_TOUCH_SQL, [now, key.pk, now - _resolution()])
        key.last_used_at = now
    return key


class AuthUnavailable(EvaError):
    """The key could not be checked: its database did not answer within WS_AUTH_TIMEOUT_S, or failed."""

    code = "auth_unavailable"
    status = 503


async def api_key_authenticate_bounded(*, raw_key: str | None, scope: str | None = None) -> ApiKey:
    """api_key_authenticate_async within WS_AUTH_TIMEOUT_S: a database that hangs or fails gives
    AuthUnavailable (503 `auth_unavailable`), never a request that waits with it (#16)."""
    import psycopg
    from django.db import DatabaseError

    try:
        async with asyncio.timeout(settings.WS_AUTH_TIMEOUT_S):
            return await api_key_authenticate_async(raw_key=raw_key, scope=scope)
    except (TimeoutError, DatabaseError, psycopg.Error) as exc:
        logger.warning("API key lookup failed: %s", type(exc).__name__)
        raise AuthUnavailable("Authentication is unavailable; try again.") from None


def _required(raw_key: str | None) -> str:
    if not raw_key:
        raise AuthenticationFailed(
            "An API key is required (X-API-Key or Authorization: Bearer).", code="missing_api_key"
        )
    return raw_key


_KEY_FIELDS = list(ApiKey._meta.concrete_fields)
_USER_FIELDS = list(get_user_model()._meta.concrete_fields)
_KEY_WITH_OWNER_SQL = (
    f"SELECT {', '.join(f'k.{f.column}' for f in _KEY_FIELDS)}, {', '.join(f'u.{f.column}' for f in _USER_FIELDS)} "
    f"FROM {ApiKey._meta.db_table} k "
    f"JOIN {get_user_model()._meta.db_table} u ON u.{get_user_model()._meta.pk.column} = k.owner_id "
    "WHERE k.prefix = %s"
)
_TOUCH_SQL = (
    f"UPDATE {ApiKey._meta.db_table} SET last_used_at = %s "
    "WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)"
)


def _key_from_row(row: tuple[Any, ...]) -> ApiKey:
    """The key and its owner, as the ORM would load them (Model.from_db)."""
    split = len(_KEY_FIELDS)
    key = ApiKey.from_db("default", [f.attname for f in _KEY_FIELDS], row[:split])
    key.owner = get_user_model().from_db("default", [f.attname for f in _USER_FIELDS], row[split:])
    return key


def _verified(key: ApiKey | None, secret: str, scope: str | None, now: datetime) -> ApiKey:
    # Hash even when the prefix is unknown so that both paths cost the same.
    candidate = _hash_secret(secret)
    expected = key.hashed_secret if key is not None else "0" * 64
    if not hmac.compare_digest(candidate, expected) or key is None:
        raise AuthenticationFailed("The API key is not valid.", code="invalid_api_key")
    if key.is_revoked:
        raise AuthenticationFailed("The API key has been revoked.", code="revoked_api_key")
    if key.is_expired(now=now):
        raise AuthenticationFailed("The API key has expired.", code="expired_api_key")
    if not key.owner.is_active:
        raise AuthenticationFailed("The key's owner is inactive.", code="inactive_user")
    if scope is not None and not key.has_scope(scope):
        raise PermissionDenied(f"The API key lacks the '{scope}' scope.", code="missing_scope")
    return key


def _resolution() -> timedelta:
    return timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_S)


def _needs_touch(key: ApiKey, now: datetime) -> bool:
    # At most one write per key per resolution window instead of one per request; the
    # conditional UPDATE keeps concurrent requests from all writing.
    return key.last_used_at is None or now - key.last_used_at >= _resolution()


def _touch_last_used(key: ApiKey, *, now: datetime) -> None:
    if not _needs_touch(key, now):
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - _resolution())
    ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
    key.last_used_at = now


def api_keys_revoke(*, keys: QuerySet[ApiKey]) -> int:
    """Revoke `keys` and end their open sockets in every process; how many were not revoked before."""
    selected = list(keys.values_list("pk", "prefix"))
    count = ApiKey.objects.filter(pk__in=[pk for pk, _ in selected], revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    # Keys revoked before are announced again: costless, and it covers a notice Redis missed.
    credentials_revoke(credentials=[key_credential(prefix) for _, prefix in selected], code=REVOKED_API_KEY)
    return count


def api_key_revoke(*, owner: AbstractBaseUser, key_id: int) -> ApiKey:
    """Revoke one of `owner`'s keys (idempotent) and end its sockets; someone else's key is NotFound."""
    key = ApiKey.objects.filter(owner_id=owner.pk, pk=key_id).first()
    if key is None:
        raise NotFound("No such API key.")
    api_keys_revoke(keys=ApiKey.objects.filter(pk=key.pk))
    key.refresh_from_db(fields=["revoked_at"])
    return key


def api_keys_of(*, owner: AbstractBaseUser) -> list[ApiKey]:
    """The keys `owner` holds, newest first."""
    return list(ApiKey.objects.filter(owner_id=owner.pk).order_by("-created_at"))


def key_display(key: ApiKey) -> str:
    """What may be shown of a key after creation: its prefix only."""
    return f"{KEY_PREFIX}_{key.prefix}_…"
