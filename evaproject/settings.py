"""EVA settings: every value is read once, here, from the environment.

Each variable is listed with its default in `.env.example` and the README. A value that
does not parse stops start-up with an `ImproperlyConfigured` naming the variable.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def envstr(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def envbool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false/1/0), got {value!r}")


def envint(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {number}")
    return number


def envfloat(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if number != number or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return number


def envlist(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = envstr(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def envurl(name: str, default: str) -> str:
    value = envstr(name, default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{name} must be an http(s) URL, got {value!r}")
    return value


def envsecret(name: str, *, debug: bool, debug_default: str) -> str:
    """A secret: required in production, a fixed development value only under DEBUG."""
    value = envstr(name)
    if value:
        return value
    if debug:
        return debug_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is off")


# --- core -------------------------------------------------------------------------------
DEBUG = envbool("DEBUG", False)
SECRET_KEY = envsecret("SECRET_KEY", debug=DEBUG, debug_default="eva-insecure-development-key-change-me-0123456789")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "voice",  # before "channels": its `runworker` (reconnects to Redis) replaces Channels' own
    "channels",
    "ninja",
    "accounts",
    "chat",
    "metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "evaproject.urls"
ASGI_APPLICATION = "evaproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- database ---------------------------------------------------------------------------
DATABASE_URL = envstr("DATABASE_URL")
if DATABASE_URL:
    try:
        _db = environ.Env.db_url_config(DATABASE_URL)
    except Exception as exc:  # environ raises several types for malformed URLs
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if not str(_db.get("ENGINE", "")).startswith("django.db.backends."):
        raise ImproperlyConfigured(f"DATABASE_URL has an unknown scheme: {DATABASE_URL.split(':', 1)[0]!r}")
    # A pool (psycopg_pool) rather than one connection per thread: async code reaches the
    # database from several executor threads, and opening a connection costs milliseconds.
    if _db["ENGINE"] == "django.db.backends.postgresql" and envbool("DATABASE_POOL", True):
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": envint("DATABASE_POOL_MIN", 2, minimum=0),
            "max_size": envint("DATABASE_POOL_MAX", 20, minimum=1),
            "timeout": 10,
        }
        _db["CONN_MAX_AGE"] = 0  # Django requires 0 with a pool
    else:
        _db["CONN_MAX_AGE"] = envint("DATABASE_CONN_MAX_AGE", 0, minimum=0)
    # A connection that died while idle (a restarted Postgres) is found out before a request uses it.
    _db["CONN_HEALTH_CHECKS"] = True
else:
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / "db.sqlite3"), "OPTIONS": {"timeout": 20}}
DATABASES = {"default": _db}
# The hot statements (a chat turn's history, messages and metrics) on Postgres run on the event
# loop through an async pool of their own instead of the ORM in executor threads (evaproject/asyncdb.py).
DATABASE_ASYNC = envbool("DATABASE_ASYNC", True)
DATABASE_ASYNC_POOL_MAX = envint("DATABASE_ASYNC_POOL_MAX", 10, minimum=1)
DATABASE_ASYNC_POOL_TIMEOUT_S = envfloat("DATABASE_ASYNC_POOL_TIMEOUT_S", 10.0, minimum=0.1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: channel layer and cache -----------------------------------------------------
REDIS_URL = envstr("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}")
CHANNEL_LAYER_PREFIX = envstr("CHANNEL_LAYER_PREFIX", "eva")
if REDIS_URL:
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # socket_timeout above channels_redis's 5 s BZPOPMIN: redis-py 8 defaults to 5 s too,
            # so an idle receive (a `runworker` waiting for work) died with "Timeout reading".
            "CONFIG": {
                # retry: a pooled connection Redis dropped (it restarted) is replaced and the
                # command sent once more, so the first voice reply after a restart is not
                # tts_unavailable (reliability issue #16).
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "retry": AsyncRetry(NoBackoff(), 1)}],
                "prefix": CHANNEL_LAYER_PREFIX,
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CHANNEL_LAYER_PREFIX,
            "OPTIONS": {"retry": Retry(NoBackoff(), 1)},  # as the channel layer's
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- auth, sessions, security ------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat-page"
LOGOUT_REDIRECT_URL = "login"
SIGNUP_ENABLED = envbool("SIGNUP_ENABLED", False)

SECURE_SSL = envbool("SECURE_SSL", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_SSL
CSRF_COOKIE_SECURE = SECURE_SSL
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", SECURE_SSL)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000 if SECURE_SSL else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("BEHIND_TLS_PROXY", False) else None
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]

# API keys: the keyed hash uses its own secret so that rotating SECRET_KEY (sessions)
# does not invalidate every key a mobile app holds.
API_KEY_HASH_SECRET = envsecret("API_KEY_HASH_SECRET", debug=True, debug_default=SECRET_KEY)
API_KEY_LAST_USED_RESOLUTION_S = envint("API_KEY_LAST_USED_RESOLUTION_S", 60, minimum=0)

# --- security issue #15 (helper "secrets"): /ready details, login throttling -------------------
READY_TOKEN = envstr("READY_TOKEN")  # `Authorization: Bearer` for /ready's details; empty: staff sessions only
# Login throttling (django-axes, accounts/login_throttle.py): after LOGIN_FAILURE_LIMIT failed
# logins for one username, or from one client address, /login/ and /admin/login/ refuse every
# login for LOGIN_COOLOFF_MINUTES. The counts live in the cache: Redis, shared by all processes,
# when REDIS_URL is set; else the process's memory (the embedded default is one process).
LOGIN_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_COOLOFF_MINUTES = envint("LOGIN_COOLOFF_MINUTES", 15, minimum=1)
INSTALLED_APPS.append("axes")
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # last, as django-axes requires
AUTHENTICATION_BACKENDS = [
    "accounts.login_throttle.LoginThrottleBackend",  # first: a locked-out login never reaches the password
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks out
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.login_throttle.lockout_response"
AXES_ENABLE_ADMIN = False  # the cache handler keeps no rows for the admin to list
AXES_VERBOSE = False
if not REDIS_URL:
    # axes warns that a per-process cache counts per process: intended without Redis (above).
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]

# --- LLM --------------------------------------------------------------------------------
OLLAMA_URL = envurl("OLLAMA_URL", "http://127.0.0.1:11434")
OLLAMA_MODEL = envstr("OLLAMA_MODEL", "phi3:mini")
OLLAMA_KEEP_ALIVE = envstr("OLLAMA_KEEP_ALIVE", "-1")
OLLAMA_WARMUP = envbool("OLLAMA_WARMUP", True)
OLLAMA_CONNECT_TIMEOUT_S = envfloat("OLLAMA_CONNECT_TIMEOUT_S", 3.0, minimum=0.01)
GROQ_API_KEY = envstr("GROQ_API_KEY")
GROQ_MODEL = envstr("GROQ_MODEL", "llama-3.1-8b-instant")
GROQ_BASE_URL = envstr("GROQ_BASE_URL")  # empty: the SDK's default (Groq's cloud)
GROQ_TIMEOUT_S = envfloat("GROQ_TIMEOUT_S", 30.0, minimum=0.01)
GROQ_MAX_RETRIES = envint("GROQ_MAX_RETRIES", 1, minimum=0, maximum=10)
LLM_BACKENDS = envlist("LLM_BACKENDS", ["ollama", "groq"])
for _backend in LLM_BACKENDS:
    if _backend not in ("ollama", "groq"):
        raise ImproperlyConfigured(f"LLM_BACKENDS may only name ollama and groq, got {_backend!r}")
LLM_FIRST_TOKEN_DEADLINE_S = envfloat("LLM_FIRST_TOKEN_DEADLINE_S", 20.0, minimum=0.01)
LLM_TOKEN_IDLE_TIMEOUT_S = envfloat("LLM_TOKEN_IDLE_TIMEOUT_S", 30.0, minimum=0.01)
LLM_NUM_PREDICT = envint("LLM_NUM_PREDICT", 512, minimum=1)
LLM_NUM_CTX = envint("LLM_NUM_CTX", 4096, minimum=256)
LLM_TEMPERATURE = envfloat("LLM_TEMPERATURE", 0.7, minimum=0.0, maximum=2.0)
LLM_SYSTEM_PROMPT = envstr(
    "LLM_SYSTEM_PROMPT", "You are EVA, a helpful, concise assistant. Answer in the language of the user."
)
LLM_HISTORY_TURNS = envint("LLM_HISTORY_TURNS", 10, minimum=0)
BREAKER_FAILURE_THRESHOLD = envint("BREAKER_FAILURE_THRESHOLD", 3, minimum=1)
BREAKER_COOLDOWN_S = envfloat("BREAKER_COOLDOWN_S", 30.0, minimum=0.0)

# --- chat -------------------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = envint("CHAT_MAX_MESSAGE_CHARS", 8000, minimum=1)


def envratelimit(name: str, default: str) -> str:
    """A rate such as `60/minute` or `1000/hour` (the `limits` library's notation)."""
    from limits import parse

    value = envstr(name, default)
    try:
        parse(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must look like 60/minute or 1000/hour, got {value!r}") from None
    return value


RATE_LIMIT_PER_KEY = envratelimit("RATE_LIMIT_PER_KEY", "60/minute")
RATE_LIMIT_PER_USER = envratelimit("RATE_LIMIT_PER_USER", "120/minute")

# --- open WebSockets per credential (security issue #15, helper "revoke": accounts/revocation.py)
# Open /ws/chat sockets one API key, and one user (keys and browser sessions together), may hold;
# 0: no cap. With REDIS_URL the count spans every web process.
WS_MAX_SOCKETS_PER_KEY = envint("WS_MAX_SOCKETS_PER_KEY", 20, minimum=0)
WS_MAX_SOCKETS_PER_USER = envint("WS_MAX_SOCKETS_PER_USER", 50, minimum=0)
# Longest a /ws/chat handshake waits for the API key lookup: past it, or on a database error,
# the socket gets the error auth_unavailable and close code 4503 (reliability issue #16).
WS_AUTH_TIMEOUT_S = envfloat("WS_AUTH_TIMEOUT_S", 5.0, minimum=0.1)
# On SIGTERM, how long replies in flight may go on before they are stopped and stored as partial
# (evaproject/restart.py); keep it under the process manager's grace period (Kubernetes: 30 s).
DRAIN_TIMEOUT_S = envfloat("DRAIN_TIMEOUT_S", 10.0, minimum=0.0)

# --- resumable replies (issue #17, item 3: chat/replay.py) ----------------------------------
# Every frame of a reply is kept for a client that lost its socket or SSE stream: in Redis (a
# stream per reply) with REDIS_URL, so that any web process can resume it; else in memory.
# REPLAY_MAX_FRAMES: frames kept per reply (the oldest go first); REPLAY_TTL_S: how long a reply's
# frames are kept after its last one; REPLAY_GRACE_S: how long a reply whose client dropped keeps
# generating with nobody resuming it (0: stopped at once, as before), after which it is kept as partial.
REPLAY_MAX_FRAMES = envint("REPLAY_MAX_FRAMES", 2048, minimum=1)
REPLAY_TTL_S = envint("REPLAY_TTL_S", 300, minimum=1)
REPLAY_GRACE_S = envfloat("REPLAY_GRACE_S", 10.0, minimum=0.0)
# Frames are written to the buffer together every REPLAY_FLUSH_MS (a reply's start and end at once).
REPLAY_FLUSH_MS = envint("REPLAY_FLUSH_MS", 25, minimum=1, maximum=1000)

# --- voice ------------------------------------------------------------------------------
MMS_TTS_MODEL = envstr("MMS_TTS_MODEL", "facebook/mms-tts-fra")  # the default voice's model
TTS_DEFAULT_VOICE = envstr("TTS_DEFAULT_VOICE", "fra")


def _tts_voices(default_voice: str, default_model: str, extra: str) -> dict[str, str]:
    """Voice name -> model: the default voice (MMS_TTS_MODEL) plus TTS_VOICES "name=model,..."
    ("none": the default voice alone)."""
    voices = {default_voice: default_model}
    for item in (part.strip() for part in ("" if extra.strip().lower() == "none" else extra).split(",")):
        if not item:
            continue
        name, sep, model = (piece.strip() for piece in item.partition("="))
        if not sep or not model or not name.replace("-", "").replace("_", "").isalnum():
            raise ImproperlyConfigured(f"TTS_VOICES items must look like fra=facebook/mms-tts-fra, got {item!r}")
        if name == default_voice and model != default_model:
            raise ImproperlyConfigured(f"TTS_VOICES names {name!r}, the default voice: set MMS_TTS_MODEL instead")
        voices[name] = model
    return voices


TTS_VOICES = _tts_voices(TTS_DEFAULT_VOICE, MMS_TTS_MODEL, envstr("TTS_VOICES", "eng=facebook/mms-tts-eng"))
# Where synthesis runs: "channel" = runworker voice-tts workers over the channel layer,
# "local" = one child process of the web process; "auto" = channel when REDIS_URL is set.
TTS_TRANSPORT = envchoice("TTS_TRANSPORT", "auto", ("auto", "channel", "local"))
TTS_DEVICE = envchoice("TTS_DEVICE", "auto", ("auto", "cpu", "cuda"))
TTS_CPU_THREADS = envint("TTS_CPU_THREADS", 0, minimum=0)  # 0: torch's default
TTS_SPEAKING_RATE = envfloat("TTS_SPEAKING_RATE", 1.0, minimum=0.1, maximum=4.0)
TTS_NOISE_SCALE = envfloat("TTS_NOISE_SCALE", 0.667, minimum=0.0, maximum=2.0)
TTS_NOISE_SCALE_DURATION = envfloat("TTS_NOISE_SCALE_DURATION", 0.8, minimum=0.0, maximum=2.0)
TTS_MAX_CHARS = envint("TTS_MAX_CHARS", 1000, minimum=1, maximum=20000)
TTS_TIMEOUT_S = envfloat("TTS_TIMEOUT_S", 30.0, minimum=0.1)
TTS_PICKUP_TIMEOUT_S = envfloat("TTS_PICKUP_TIMEOUT_S", 5.0, minimum=0.1)
TTS_START_TIMEOUT_S = envfloat("TTS_START_TIMEOUT_S", 120.0, minimum=1.0)
TTS_CACHE_ENTRIES = envint("TTS_CACHE_ENTRIES", 256, minimum=0)
TTS_CACHE_MAX_BYTES = envint("TTS_CACHE_MAX_BYTES", 16 * 1024 * 1024, minimum=0)  # the phrase cache's audio, in all
TTS_WARMUP = envbool("TTS_WARMUP", True)
# The malloc TTS processes run on: "jemalloc" when installed (flat memory; voice/allocator.py) or
# "system". With "system", a fixed glibc mmap threshold in bytes (0: glibc's adaptive one) trades
# speed for memory: voice/engine.py fix_mmap_threshold and bench/RESULTS.md (#14, memory).
TTS_ALLOCATOR = envchoice("TTS_ALLOCATOR", "jemalloc", ("jemalloc", "system"))
TTS_MALLOC_MMAP_THRESHOLD = envint("TTS_MALLOC_MMAP_THRESHOLD", 0, minimum=0)
TTS_WORKER_HANG_EXIT_S = envfloat("TTS_WORKER_HANG_EXIT_S", 120.0, minimum=0.0)  # 0: never
TTS_STREAM_FIRST_MIN_CHARS = envint("TTS_STREAM_FIRST_MIN_CHARS", 24, minimum=1)
TTS_STREAM_MAX_CHARS = envint("TTS_STREAM_MAX_CHARS", 220, minimum=20, maximum=20000)
TTS_STREAM_MAX_IN_FLIGHT = envint("TTS_STREAM_MAX_IN_FLIGHT", 2, minimum=1, maximum=8)
# Streamed synthesis: the first audio chunk's spectrogram frames (16 ms of audio each at 16 kHz),
# each next chunk this many times the one before, up to the largest (voice/synthesis.py).
TTS_CHUNK_FIRST_FRAMES = envint("TTS_CHUNK_FIRST_FRAMES", 12, minimum=1, maximum=1000)
TTS_CHUNK_GROWTH = envfloat("TTS_CHUNK_GROWTH", 1.25, minimum=1.0, maximum=4.0)
TTS_CHUNK_MAX_FRAMES = envint("TTS_CHUNK_MAX_FRAMES", 96, minimum=1, maximum=10000)
TTS_HUB_OFFLINE = envbool("HF_HUB_OFFLINE", False)

# --- metrics ----------------------------------------------------------------------------
METRICS_RETENTION_DAYS = envint("METRICS_RETENTION_DAYS", 30, minimum=1)
# How long the metric writer lets rows gather before one bulk INSERT (the dashboard lags by this much).
METRICS_BATCH_WAIT_S = envfloat("METRICS_BATCH_WAIT_S", 0.25, minimum=0.0)
# The dashboard reads exact percentiles from raw rows for windows up to this long holding at
# most this many requests; longer or busier windows are read from the rollups (within 1 %).
METRICS_EXACT_WINDOW_HOURS = envint("METRICS_EXACT_WINDOW_HOURS", 24, minimum=0)
METRICS_EXACT_MAX_ROWS = envint("METRICS_EXACT_MAX_ROWS", 100_000, minimum=0)
# Per-minute rollups are kept this many days (hour and day rollups for ever): an older window
# edge is read to the hour. metrics_prune deletes the older minute rows.
METRICS_ROLLUP_MINUTE_DAYS = envint("METRICS_ROLLUP_MINUTE_DAYS", 8, minimum=1)
PROMETHEUS_TOKEN = envstr("PROMETHEUS_TOKEN")  # empty: GET /metrics answers 404
# Several web processes: one directory, emptied before they start, shared by all of them;
# prometheus_client reads the same variable from the environment at import.
PROMETHEUS_MULTIPROC_DIR = envstr("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not os.path.isdir(PROMETHEUS_MULTIPROC_DIR):
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR must be an existing directory, got {PROMETHEUS_MULTIPROC_DIR!r}"
    )

# --- i18n, static -----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOG_LEVEL = envchoice("LOG_LEVEL", "INFO", ("debug", "info", "warning", "error")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line goes through accounts.redaction (no URL password or secret setting in a log).
    "formatters": {
        "plain": {
            "class": "accounts.redaction.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {name: {"level": LOG_LEVEL} for name in ("chat", "voice", "metrics", "evaproject")},
}
