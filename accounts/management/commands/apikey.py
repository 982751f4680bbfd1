"""`manage.py apikey create|list|revoke`: manage API keys from a shell."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.api_keys import api_key_create, api_key_revoke, api_keys_of, key_display
from accounts.errors import EvaError

# Keys expire before 3000-01-01 at the latest, as the REST API bounds them (accounts.validation).
MAX_EXPIRY_DAYS = 36_500


class Command(BaseCommand):
    help = "Create, list or revoke API keys. The key is printed once, at creation."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it once")
        create.add_argument("--user", required=True, help="username of the owner")
        create.add_argument("--name", required=True, help="a name to recognise the key by, e.g. phone")
        create.add_argument("--scopes", default="chat", help="comma-separated: chat,tts,metrics (default chat)")
        create.add_argument("--expires-in-days", type=int, default=None, help="expire after this many days")
        listing = sub.add_parser("list", help="list a user's keys (never their secrets)")
        listing.add_argument("--user", required=True)
        revoke = sub.add_parser("revoke", help="revoke a key by id")
        revoke.add_argument("--user", required=True)
        revoke.add_argument("key_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user named {options['user']!r}.")
        try:
            getattr(self, f"_{options['action']}")(user, options)
        except EvaError as exc:
            raise CommandError(exc.message) from None

    def _create(self, user: Any, options: dict[str, Any]) -> None:
        days = options["expires_in_days"]
        if days is not None and not 0 < days <= MAX_EXPIRY_DAYS:
            raise CommandError(f"--expires-in-days must be between 1 and {MAX_EXPIRY_DAYS}.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        key, plaintext = api_key_create(
            owner=user, name=options["name"], scopes=options["scopes"], expires_at=expires_at
        )
        self.stdout.write(plaintext)
        self.stderr.write(
            f"Created key #{key.pk} '{key.name}' for {user.username} with scopes {','.join(key.scopes)}. "
            "Store it now: it cannot be shown again."
        )

    def _list(self, user: Any, options: dict[str, Any]) -> None:
        for key in api_keys_of(owner=user):
            state = "revoked" if key.is_revoked else "expired" if key.is_expired() else "active"
            self.stdout.write(
                f"{key.pk}\t{key.name}\t{key_display(key)}\t{','.join(key.scopes)}\t{state}\t"
                f"last used {key.last_used_at.isoformat() if key.last_used_at else 'never'}"
            )

    def _revoke(self, user: Any, options: dict[str, Any]) -> None:
        key = api_key_revoke(owner=user, key_id=options["key_id"])
        self.stdout.write(f"Revoked key #{key.pk} '{key.name}'.")
