import sys

from django.apps import AppConfig


def _is_tts_worker(argv: list[str]) -> bool:
    """True in `manage.py runworker ... voice-tts ...`."""
    from voice.config import TTS_CHANNEL

    return "runworker" in argv[1:3] and TTS_CHANNEL in argv


class VoiceConfig(AppConfig):
    name = "voice"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Channels' worker builds a consumer only when the first message arrives, and
        # runworker has no start-up hook: load the model now, in the background, so that
        # the first request does not pay for it (and /ready reports "loading" meanwhile).
        if _is_tts_worker(sys.argv):
            from voice.worker import preload

            preload()
