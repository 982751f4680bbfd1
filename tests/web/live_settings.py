"""Settings of the live ASGI server that browser tests start (evaproject.settings plus two changes).

- Static files are served straight from the source folders (no collectstatic before a test run).
- Users made by the tests carry MD5 hashes (tests/conftest.py makes logins cheap), so the
  server must accept them; production keeps Django's default hashers.
"""

from evaproject.settings import *  # noqa: F403

WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
