"""Turn written text into what a voice should say: numbers, times, money and symbols spelled out.

MMS voices are trained on lower-case letters only, and their tokenizer silently drops every
character outside the voice's vocabulary: "14h30", "3,14", "12 €" or "50 %" would come out
as silence or as mangled words. `spoken_form` spells them out in the voice's language
(num2words) before the text reaches the tokenizer; `fold_to_vocabulary` then keeps only what
the voice can pronounce, so the engine can tell "nothing left to say" apart from real text.

Pure Python: num2words is imported only when a number is actually present.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

# ISO 639-3 voice names (as MMS uses: mms-tts-fra) to num2words language codes.
NUM2WORDS_LANGUAGES = {
    "fra": "fr",
    "eng": "en",
    "deu": "de",
    "spa": "es",
    "ita": "it",
    "por": "pt",
    "nld": "nl",
    "pol": "pl",
    "rus": "ru",
    "tur": "tr",
    "ukr": "uk",
    "ces": "cz",
    "dan": "dk",
    "fin": "fi",
    "swe": "sv",
    "nor": "no",
    "ron": "ro",
    "hun": "hu",
    "ind": "id",
    "vie": "vi",
    "kor": "ko",
}

# Longer digit runs (phone numbers, ids) are read digit by digit rather than as a quintillion.
MAX_CARDINAL_DIGITS = 12


@dataclass(frozen=True)
class LanguageWords:
    decimal: str
    minus: str
    percent: str
    hour: str
    hours: str
    currencies: dict[str, tuple[str, str]]
    symbols: dict[str, str]
    abbreviations: tuple[tuple[str, str], ...] = field(default=())
    ordinal_suffix: str = r"(?!)"  # never matches unless the language defines one


_FRENCH = LanguageWords(
    decimal="virgule",
    minus="moins",
    percent="pour cent",
    hour="heure",
    hours="heures",
    currencies={"EUR": ("euro", "euros"), "USD": ("dollar", "dollars"), "GBP": ("livre", "livres")},
    symbols={
        "&": "et",
        "+": "plus",
        "=": "égale",
        "@": "arobase",
        "°": "degrés",
        "€": "euros",
        "$": "dollars",
        "£": "livres",
    },
    abbreviations=(
        (r"\bM\.(?=\s+\w)", "monsieur"),
        (r"\bMM\.(?=\s+\w)", "messieurs"),
        (r"\bMmes\b\.?", "mesdames"),
        (r"\bMme\b\.?", "madame"),
        (r"\bMlles\b\.?", "mesdemoiselles"),
        (r"\bMlle\b\.?", "mademoiselle"),
        (r"\bDr\b\.?", "docteur"),
        (r"\bPr\b\.?(?=\s+[A-Z])", "professeur"),
        (r"\betc\.", "et cetera"),
        (r"\bp\. ?ex\.", "par exemple"),
        (r"\bc\.-à-d\.", "c'est-à-dire"),
        (r"\bn°", "numéro"),
        (r"° ?C\b", "degrés Celsius"),
    ),
    ordinal_suffix=r"(?:er|re|ère|ème|eme|e)",
)

_ENGLISH = LanguageWords(
    decimal="point",
    minus="minus",
    percent="percent",
    hour="o'clock",
    hours="o'clock",
    currencies={"EUR": ("euro", "euros"), "USD": ("dollar", "dollars"), "GBP": ("pound", "pounds")},
    symbols={
        "&": "and",
        "+": "plus",
        "=": "equals",
        "@": "at",
        "°": "degrees",
        "€": "euros",
        "$": "dollars",
        "£": "pounds",
    },
    abbreviations=(
        (r"\bMr\b\.?", "mister"),
        (r"\bMrs\b\.?", "missus"),
        (r"\bMs\b\.?(?=\s+[A-Z])", "miz"),
        (r"\bDr\b\.?(?=\s+[A-Z])", "doctor"),
        (r"\bvs\b\.?", "versus"),
        (r"\betc\.", "et cetera"),
        (r"\be\.g\.", "for example"),
        (r"\bi\.e\.", "that is"),
        (r"\bno\.(?=\s*\d)", "number"),
        (r"° ?C\b", "degrees Celsius"),
        (r"° ?F\b", "degrees Fahrenheit"),
    ),
    ordinal_suffix=r"(?:st|nd|rd|th)",
)

_NEUTRAL = LanguageWords(
    decimal="", minus="", percent="", hour="", hours="", currencies={}, symbols={}, abbreviations=()
)
LANGUAGE_WORDS = {"fr": _FRENCH, "en": _ENGLISH}

_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP"}
_SPACES = re.compile(r"[\s\u00a0\u202f\u2009\u2007]+")
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "‘": "'", "`": "'"})

# A number as people write it. French groups thousands with spaces or dots and uses a
# decimal comma ("1 000,5", "1.234"); English groups with commas and uses a point. A lone
# "3.14" is a decimal in both.
_NUMBER_FR = r"(?P<int>\d{1,3}(?:(?P<sep>[ .])\d{3})(?:(?P=sep)\d{3})*(?!\d)|\d+)(?:[,.](?P<frac>\d+))?"
_NUMBER_EN = r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<frac>\d+))?"
_NUMBER_OTHER = r"(?P<int>\d+)(?:[.,](?P<frac>\d+))?"


def language_of_voice(voice: str) -> str | None:
    """num2words language for a voice name such as "fra" or "fra-female"; None when unknown."""
    return NUM2WORDS_LANGUAGES.get(re.split(r"[-_.]", voice.lower(), maxsplit=1)[0])


class _Speller:
    """Spells numbers for one language; every regex callback of `spoken_form` goes through it."""

    def __init__(self, language: str | None) -> None:
        self.language = language
        self.words = LANGUAGE_WORDS.get(language or "", _NEUTRAL)
        self.number_pattern = {"fr": _NUMBER_FR, "en": _NUMBER_EN}.get(language or "", _NUMBER_OTHER)

    def cardinal(self, digits: str) -> str:
        if self.language is None:
            return digits
        if len(digits) > MAX_CARDINAL_DIGITS:
            return self.digit_by_digit(digits)
        from num2words import num2words

        return str(num2words(int(digits), lang=self.language))

    def digit_by_digit(self, digits: str) -> str:
        return " ".join(self.cardinal(d) for d in digits)

    def ordinal(self, digits: str) -> str:
        if self.language is None or len(digits) > 6:
            return digits
        from num2words import num2words

        return str(num2words(int(digits), lang=self.language, to="ordinal"))

    def year_or_cardinal(self, digits: str) -> str:
        if self.language == "en" and len(digits) == 4 and 1100 <= int(digits) <= 1999:
            from num2words import num2words

            return str(num2words(int(digits), lang="en", to="year"))
        return self.cardinal(digits)

    def fraction(self, frac: str) -> str:
        # French reads "3,14" as "trois virgule quatorze"; English reads digits one by one.
        if self.language == "fr" and len(frac) <= 3 and not frac.startswith("0"):
            return self.cardinal(frac)
        return self.digit_by_digit(frac)

    def number(self, match: re.Match[str]) -> str:
        integer = re.sub(r"\D", "", match.group("int"))
        frac = match.group("frac")
        plain = match.group("int") == integer and frac is None
        spoken = self.year_or_cardinal(integer) if plain else self.cardinal(integer)
        if frac is not None and self.language is not None:
            spoken = f"{spoken} {self.words.decimal} {self.fraction(frac)}"
        elif frac is not None:
            spoken = f"{spoken} {self.digit_by_digit(frac)}"
        return f" {spoken} "

    def hour_word(self, hours: int) -> str:
        spoken = self.cardinal(str(hours))
        if self.language == "fr":
            # "une heure", "vingt et une heures": heure is feminine.
            spoken = re.sub(r"\bun$", "une", spoken)
            return f"{spoken} {self.words.hour if hours <= 1 else self.words.hours}"
        return spoken

    def time(self, hours: int, minutes: int, meridiem: str = "") -> str:
        if self.language == "en":
            if minutes == 0:
                tail = "o'clock" if hours <= 12 else "hundred"
            elif minutes < 10:
                tail = f"oh {self.cardinal(str(minutes))}"
            else:
                tail = self.cardinal(str(minutes))
            spoken = f"{self.cardinal(str(hours))} {tail}"
            if meridiem:
                spoken = f"{spoken} {' '.join(meridiem.lower())}"
            return f" {spoken} "
        if self.language is None:
            return f" {hours} {minutes:02d} "
        spoken = self.hour_word(hours)
        if minutes:
            spoken = f"{spoken} {self.cardinal(str(minutes))}"
        return f" {spoken} "

    def money(self, code: str, match: re.Match[str]) -> str:
        units = re.sub(r"\D", "", match.group("int"))
        frac = match.group("frac")
        singular, plural = self.words.currencies.get(code, (code.lower(), code.lower()))
        spoken = f"{self.cardinal(units)} {singular if int(units) <= 1 else plural}"
        if frac:
            cents = (frac + "0")[:2] if len(frac) < 2 else frac[:2]
            if int(cents):
                spoken = f"{spoken} {self.cardinal(str(int(cents)))}"
        return f" {spoken} "


def _replace_with(words: str) -> Callable[[re.Match[str]], str]:
    return lambda match: f" {words} "


def _substitutions(speller: _Speller) -> list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]:
    words = speller.words
    number = speller.number_pattern
    money_number = number.replace("(?P<sep>", "(?P<msep>").replace("(?P=sep)", "(?P=msep)")
    rules: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []
    for pattern, replacement in words.abbreviations:
        rules.append((re.compile(pattern), _replace_with(replacement)))
    # Times: "14h30", "14 h 30", "9h" (French) and "14:30", "2:05 pm".
    if speller.language == "fr":
        rules.append(
            (
                re.compile(r"(?<![\d:])(?P<h>[01]?\d|2[0-3]) ?[hH] ?(?P<m>[0-5]\d)?(?![\w])"),
                lambda m: speller.time(int(m.group("h")), int(m.group("m") or 0)),
            )
        )
    rules.append(
        (
            re.compile(
                r"(?<![\d:])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?::[0-5]\d)?(?![\d:])"
                r"(?: ?(?P<mer>[aApP])\.? ?[mM]\.?(?!\w))?"
            ),
            lambda m: speller.time(
                int(m.group("h")), int(m.group("m")), (m.group("mer") or "") and m.group("mer") + "m"
            ),
        )
    )
    # Money: "12 €", "12,50€", "€12.50", "$3", "12 EUR".
    rules.append(
        (
            re.compile(rf"(?P<sym>[€$£]) ?{money_number}"),
            lambda m: speller.money(_CURRENCY_SYMBOLS[m.group("sym")], m),
        )
    )
    rules.append(
        (
            re.compile(rf"{money_number} ?(?:(?P<sym>[€$£])|(?P<code>EUR|USD|GBP)\b)"),
            lambda m: speller.money(m.group("code") or _CURRENCY_SYMBOLS[m.group("sym")], m),
        )
    )
    rules.append((re.compile(r" ?%"), lambda m: f" {words.percent} "))
    rules.append(
        (
            re.compile(rf"(?<![\d.,])(?P<n>\d+){words.ordinal_suffix}(?!\w)"),
            lambda m: f" {speller.ordinal(m.group('n'))} ",
        )
    )
    # A minus sign only where it cannot be a hyphen: at the start or after a space.
    rules.append(
        (
            re.compile(rf"(?:(?<=\s)|^)[-−](?={number})"),
            lambda m: f" {words.minus} ",
        )
    )
    rules.append((re.compile(rf"(?<![\d.,]){number}"), speller.number))
    if words.symbols:
        symbols = "".join(re.escape(s) for s in words.symbols)
        rules.append((re.compile(f"[{symbols}]"), lambda m: f" {words.symbols[m.group(0)]} "))
    return rules


_RULES: dict[str | None, list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]] = {}


def spoken_form(text: str, *, language: str | None) -> str:
    """The text with numbers, times, money, percentages and symbols written out as words."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    text = _SPACES.sub(" ", text)
    rules = _RULES.get(language)
    if rules is None:
        rules = _RULES[language] = _substitutions(_Speller(language))
    for pattern, replace in rules:
        text = pattern.sub(replace, text)
    return _SPACES.sub(" ", text).strip()


def fold_to_vocabulary(text: str, vocabulary: Collection[str]) -> str:
    """Keep what the voice can say: letters it knows (accents dropped when it lacks them);
    punctuation, symbols and emoji become word breaks; letters of other scripts are dropped."""
    out: list[str] = []
    for char in text:
        if char in vocabulary:
            out.append(char)
            continue
        lower = char.lower()
        if lower in vocabulary:
            out.append(lower)
            continue
        base = "".join(c for c in unicodedata.normalize("NFD", lower) if not unicodedata.combining(c))
        if base and all(c in vocabulary for c in base):
            out.append(base)
        elif unicodedata.category(char)[0] in "LNM":
            continue
        else:
            out.append(" ")
    folded = _SPACES.sub(" ", "".join(out)).strip()
    if " " not in vocabulary:
        folded = folded.replace(" ", "")
    return folded
