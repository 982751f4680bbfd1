from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """The ground floor: API keys, authentication, errors, rate limits, async database plumbing."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
