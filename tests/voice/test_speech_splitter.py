"""Cutting a streamed reply into speakable pieces, on hard text, whatever the token boundaries."""

from __future__ import annotations

import pytest

from voice.speech_splitter import SpeechSplitter


def split(text: str, *, step: int = 3, **options) -> list[str]:
    splitter = SpeechSplitter(**options)
    pieces: list[str] = []
    for start in range(0, len(text), step):
        pieces += splitter.feed(text[start : start + step])
    return pieces + splitter.flush()


HARD_TEXTS = [
    "Bonjour M. Dupont, comment allez-vous aujourd'hui ? Il est 14:30 et pi vaut 3.14 ou 3,14. Voilà !",
    "Hello there. I met Dr. Smith e.g. yesterday. J. K. Rowling wrote it. The end",
    "1. Premier point\n2. Second point\n\nFin.",
    "pas de ponctuation du tout " * 30,
    "Super 👍 merci beaucoup pour tout ça !!! 🎉🎉 Ok… à plus.",
    "Il a dit « bonjour. » Puis il est parti... Étrange, non ?",
    "x" * 700,
]


@pytest.mark.parametrize("text", HARD_TEXTS)
def test_pieces_do_not_depend_on_how_the_tokens_were_cut(text):
    assert split(text, step=1) == split(text, step=4) == split(text, step=1000)


@pytest.mark.parametrize("text", HARD_TEXTS)
def test_no_text_is_lost_or_reordered(text):
    assert "".join(split(text)).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


def test_it_does_not_cut_after_a_title_a_decimal_or_a_time():
    assert split("Bonjour M. Dupont. Il est 14:30 et pi vaut 3.14 ou 3,14. Voilà !") == [
        "Bonjour M. Dupont.",
        "Il est 14:30 et pi vaut 3.14 ou 3,14.",
        "Voilà !",
    ]


def test_it_does_not_cut_after_initials_or_latin_abbreviations():
    assert split("I met Dr. Smith e.g. yesterday. J. K. Rowling wrote it.") == [
        "I met Dr. Smith e.g. yesterday.",
        "J. K. Rowling wrote it.",
    ]


def test_list_markers_stay_with_their_item_and_lines_are_pieces():
    assert split("1. Premier point\n2. Second point\n\nFin.") == ["1. Premier point", "2. Second point", "Fin."]


def test_the_first_piece_is_cut_at_a_clause_once_long_enough_then_only_at_sentences():
    text = "Alors, pour répondre à ta question, il faut savoir ceci, et cela aussi, bien sûr. Ensuite, on verra."
    assert split(text, first_min_chars=24) == [
        "Alors, pour répondre à ta question,",
        "il faut savoir ceci, et cela aussi, bien sûr.",
        "Ensuite, on verra.",
    ]


def test_text_without_any_punctuation_is_cut_at_spaces_below_the_limit():
    pieces = split("pas de ponctuation du tout " * 30, max_chars=80, first_max_chars=60)
    assert len(pieces) > 3
    assert len(pieces[0]) <= 60
    assert all(len(piece) <= 80 for piece in pieces)
    assert all(not piece.endswith(("pon", "ponc")) for piece in pieces)  # whole words only


def test_a_very_long_sentence_is_cut_at_a_clause_mark_before_the_limit():
    sentence = "Le premier élément de la liste est vraiment important, " + "le second aussi " * 10 + "et le reste."
    pieces = split("Oui. " + sentence, max_chars=120)
    assert pieces[0] == "Oui."
    assert pieces[1] == "Le premier élément de la liste est vraiment important,"
    assert all(len(piece) <= 120 for piece in pieces)


def test_a_run_without_spaces_is_cut_hard():
    pieces = split("x" * 500, max_chars=200, first_max_chars=100)
    assert [len(piece) for piece in pieces] == [100, 200, 200]


def test_emoji_only_text_yields_no_piece_but_emoji_within_a_sentence_stay():
    assert split("🎉🎉🎉") == []
    assert split("Super 👍 merci ! 🎉") == ["Super 👍 merci !"]


def test_french_closing_quotes_stay_with_their_sentence():
    assert split("Il a dit « bonjour. » Puis il est parti.") == ["Il a dit « bonjour. »", "Puis il est parti."]


def test_a_period_at_the_end_of_a_token_waits_for_the_next_token():
    splitter = SpeechSplitter()
    assert splitter.feed("Il est 3.") == []
    assert splitter.feed("14 heures. ") == []
    assert splitter.feed("Bon") == ["Il est 3.14 heures."]
