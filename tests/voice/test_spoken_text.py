"""Written text to what a voice says: numbers, times, money and symbols in the voice's language."""

from __future__ import annotations

import pytest

from voice.spoken_text import fold_to_vocabulary, language_of_voice, spoken_form

FRENCH_VOCABULARY = set("_ abcdefghijklmnopqrstuvwxyzàâçéèêëîïôùûüÿœ'-")
ENGLISH_VOCABULARY = set("_ abcdefghijklmnopqrstuvwxyz'-")


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Rendez-vous à 14h30", "Rendez-vous à quatorze heures trente"),
        ("à 21h", "à vingt et une heures"),
        ("à 1h05", "à une heure cinq"),
        ("à 14:30", "à quatorze heures trente"),
        ("pi vaut 3,14", "pi vaut trois virgule quatorze"),
        ("pi vaut 3.14", "pi vaut trois virgule quatorze"),
        ("12,50 €", "douze euros cinquante"),
        ("€3", "trois euros"),
        ("$1", "un dollar"),
        ("50 %", "cinquante pour cent"),
        ("1 000 000 habitants", "un million habitants"),
        ("le 1er mai", "le premier mai"),
        ("il fait -5 °C", "il fait moins cinq degrés Celsius"),
        ("M. Dupont et Mme Curie", "monsieur Dupont et madame Curie"),
        ("2024", "deux mille vingt-quatre"),
    ],
)
def test_french_numbers_times_and_money_are_spelled_out(written, spoken):
    assert spoken_form(written, language="fr") == spoken


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("at 2:05 pm", "at two oh five p m"),
        ("at 9:00", "at nine o'clock"),
        ("pi is 3.14", "pi is three point one four"),
        ("$12.50", "twelve dollars fifty"),
        ("1,234 people", "one thousand, two hundred and thirty-four people"),
        ("in 1990", "in nineteen ninety"),
        ("the 3rd time", "the third time"),
        ("50%", "fifty percent"),
        ("Mr. Smith", "mister Smith"),
    ],
)
def test_english_numbers_times_and_money_are_spelled_out(written, spoken):
    assert spoken_form(written, language="en") == spoken


def test_a_long_digit_run_is_read_digit_by_digit():
    assert spoken_form("0612345678901234", language="fr").split()[:3] == ["zéro", "six", "un"]


def test_a_language_without_num2words_keeps_its_digits():
    assert spoken_form("abc 123", language=None) == "abc 123"


def test_voice_names_map_to_number_languages():
    assert language_of_voice("fra") == "fr"
    assert language_of_voice("eng-female") == "en"
    assert language_of_voice("xyz") is None


def test_folding_keeps_known_letters_and_turns_symbols_and_emoji_into_word_breaks():
    assert fold_to_vocabulary("Super👍merci, «ça» va!", FRENCH_VOCABULARY) == "super merci ça va"


def test_folding_drops_accents_the_voice_does_not_know():
    assert fold_to_vocabulary("Café déjà ñandú", ENGLISH_VOCABULARY) == "cafe deja nandu"


def test_folding_drops_letters_of_other_scripts_entirely():
    assert fold_to_vocabulary("你好 🙂 !!!", FRENCH_VOCABULARY) == ""
