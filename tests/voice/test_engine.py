"""The MMS engine on a tiny random-weight voice loaded through from_pretrained, like real weights."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace

import pytest

from voice.engine import ModelNotAvailable, TTSEngine
from voice.errors import InvalidText, TextTooLong, TTSUnavailable, UnknownVoice
from voice.synthesis import EngineConfig, VoiceSpec
from voice.wav import wav_info

HOP = 8 * 8 * 2 * 2  # samples per spectrogram frame: the product of the tiny voice's upsample rates


def config_for(folder, **overrides) -> EngineConfig:
    voices = (VoiceSpec("fra", str(folder), "fr"), VoiceSpec("eng", str(folder), "en"))
    return EngineConfig(voices=voices, default_voice="fra", cpu_threads=1, **overrides)


@pytest.fixture(scope="module")
def engine(tiny_voice) -> TTSEngine:
    return TTSEngine.load(config_for(tiny_voice))


def test_it_answers_a_16_bit_mono_wav_at_the_model_sampling_rate(engine):
    synthesis = engine.synthesize(text="Bonjour tout le monde.")
    info = wav_info(synthesis.wav)
    assert (info.channels, info.sample_width, info.sample_rate) == (1, 2, 16000)
    assert synthesis.sample_rate == 16000
    assert info.frames > 0
    assert synthesis.duration_s == pytest.approx(info.duration_s)


def test_the_waveform_is_trimmed_to_the_predicted_length(engine):
    # VitsModel pads a batch to its longest item; sequence_lengths is whole frames of HOP samples.
    assert wav_info(engine.synthesize(text="Une phrase assez courte.").wav).frames % HOP == 0


def test_the_default_voice_is_used_when_none_is_asked_for(engine):
    assert engine.synthesize(text="Bonjour").voice == "fra"
    assert engine.synthesize(text="Hello", voice="eng").voice == "eng"


def test_digits_only_text_is_spelled_out_and_spoken(engine):
    assert engine.speakable_text(text="2024") == "deux mille vingt-quatre"
    assert engine.synthesize(text="2024").duration_s > 0


def test_numbers_follow_the_voice_language(engine):
    spoken = engine.speakable_text(text="12,50 € à 14h30", voice="fra")
    assert spoken == "douze euros cinquante à quatorze heures trente"
    assert engine.speakable_text(text="$3 at 2:30", voice="eng") == "three dollars at two thirty"


def test_text_with_nothing_speakable_is_refused_cleanly(engine):
    with pytest.raises(InvalidText) as err:
        engine.synthesize(text="🙂 !!! 你好")
    assert err.value.code == "invalid_text"


def test_empty_text_is_refused(engine):
    with pytest.raises(InvalidText):
        engine.synthesize(text="   ")


def test_an_unknown_voice_is_refused_naming_the_voices(engine):
    with pytest.raises(UnknownVoice) as err:
        engine.synthesize(text="Bonjour", voice="klingon")
    assert "fra" in err.value.message and "eng" in err.value.message


def test_text_over_the_limit_is_refused(tiny_voice):
    engine = TTSEngine.load(config_for(tiny_voice, max_chars=20, warmup=False))
    with pytest.raises(TextTooLong):
        engine.synthesize(text="x" * 21)


def test_a_repeated_phrase_comes_from_the_cache(engine):
    first = engine.synthesize(text="Je répète.")
    again = engine.synthesize(text="je répète !")  # the same words once folded
    assert not first.cached and again.cached
    assert again.wav == first.wav


def test_speaking_rate_is_applied_on_the_model(tiny_voice):
    deterministic = {"noise_scale_duration": 0.0, "cache_entries": 0, "warmup": False}
    normal = TTSEngine.load(config_for(tiny_voice, **deterministic))
    slow = TTSEngine.load(config_for(tiny_voice, speaking_rate=0.5, **deterministic))
    text = "Une phrase pour mesurer la durée."
    assert slow.synthesize(text=text).duration_s > 1.5 * normal.synthesize(text=text).duration_s


def test_uroman_romanises_other_scripts_for_a_uroman_voice(tiny_voice, tmp_path):
    folder = tmp_path / "uroman-voice"
    shutil.copytree(tiny_voice, folder)
    tokenizer_config = folder / "tokenizer_config.json"
    tokenizer_config.write_text(json.dumps({**json.loads(tokenizer_config.read_text()), "is_uroman": True}))
    config = EngineConfig(
        voices=(VoiceSpec("rus", str(folder), "ru"),), default_voice="rus", cpu_threads=1, warmup=False
    )
    engine = TTSEngine.load(config)
    assert engine.speakable_text(text="Привет") == "privet"
    assert engine.synthesize(text="Привет").duration_s > 0


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    config = EngineConfig(voices=(VoiceSpec("fra", str(tmp_path / "nowhere"), "fr"),), default_voice="fra")
    with pytest.raises(ModelNotAvailable) as err:
        TTSEngine.load(config)
    assert err.value.code == "tts_unavailable"
    assert "nowhere" in err.value.message and "does not exist" in err.value.message


def test_an_extra_voice_without_weights_leaves_the_default_voice_working(tiny_voice, tmp_path):
    voices = (VoiceSpec("fra", str(tiny_voice), "fr"), VoiceSpec("eng", str(tmp_path / "no-english"), "en"))
    engine = TTSEngine.load(EngineConfig(voices=voices, default_voice="fra", cpu_threads=1, warmup=False))
    assert engine.synthesize(text="Bonjour").duration_s > 0
    with pytest.raises(TTSUnavailable) as err:
        engine.synthesize(text="Hello", voice="eng")
    assert "no-english" in err.value.message
    assert "eng" in engine.describe()["unavailable_voices"]


def test_an_uncached_hub_model_offline_fails_fast_naming_the_model_and_the_download_command(tiny_voice):
    config = replace(config_for(tiny_voice), voices=(VoiceSpec("fra", "facebook/mms-tts-zzz", "fr"),), offline=True)
    started = time.monotonic()
    with pytest.raises(ModelNotAvailable) as err:
        TTSEngine.load(config)
    assert time.monotonic() - started < 5
    assert "facebook/mms-tts-zzz" in err.value.message
    assert "`hf download facebook/mms-tts-zzz`" in err.value.message


def test_an_uncached_hub_model_without_network_fails_fast(tiny_voice, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    config = replace(config_for(tiny_voice), voices=(VoiceSpec("fra", "facebook/mms-tts-zzz", "fr"),))
    started = time.monotonic()
    with pytest.raises(ModelNotAvailable) as err:
        TTSEngine.load(config)
    assert time.monotonic() - started < 10
    assert "hub cannot be reached" in err.value.message
