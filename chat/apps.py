from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from evaproject.middleware import run_hooks_on_loop

        run_hooks_on_loop()
