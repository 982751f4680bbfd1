"""An OpenAI-compatible API under /v1/ (issue #17), for the SDKs, tools and agents that speak it.

POST /v1/chat/completions, GET /v1/models (and /v1/models/{id}), POST /v1/audio/speech, served
by Channels consumers (openai_api.consumers) with an EVA API key as the bearer token; errors in
OpenAI's shape (openai_api.errors). The configured LLM backends and their fallback answer chat,
EVA's TTS workers speak; the same scopes, rate limits and metric rows (channel `openai`) as the
rest of EVA. Layer: above chat and voice, below evaproject (.importlinter).
"""
