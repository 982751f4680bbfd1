from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """The ground floor: API keys, authentication, errors, rate limits, async database plumbing."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the signals that end the open sockets of a credential that goes (accounts.revocation)."""
        from accounts.revocation import connect_signals

        connect_signals()
