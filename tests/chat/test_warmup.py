"""The Ollama warm-up at server start: loads the model, never blocks or fails start-up."""

from __future__ import annotations

import logging

from chat.llm.ollama import start_warmup_in_background


def test_warmup_asks_ollama_to_load_the_model_and_keep_it(ollama, settings, caplog):
    settings.OLLAMA_WARMUP = True
    caplog.set_level(logging.INFO, logger="chat.llm.ollama")
    thread = start_warmup_in_background()
    thread.join(10)
    (load,) = [r for r in ollama.requests if r.path == "/api/chat"]
    assert load.body == {"model": "phi3:mini", "messages": [], "keep_alive": -1}
    assert "model phi3:mini is loaded" in caplog.text


def test_warmup_against_a_missing_ollama_only_logs(settings, caplog):
    settings.OLLAMA_WARMUP = True
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    caplog.set_level(logging.WARNING, logger="chat.llm.ollama")
    thread = start_warmup_in_background()
    thread.join(10)
    assert not thread.is_alive()
    assert "not reachable" in caplog.text


def test_warmup_can_be_switched_off(settings):
    settings.OLLAMA_WARMUP = False
    assert start_warmup_in_background() is None


def test_keep_alive_durations_are_passed_through(ollama, settings):
    settings.OLLAMA_WARMUP = True
    settings.OLLAMA_KEEP_ALIVE = "10m"
    start_warmup_in_background().join(10)
    assert ollama.requests[-1].body["keep_alive"] == "10m"
