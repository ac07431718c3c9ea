"""PERSON and ADDRESS: gazetteers plus context, on capitalised-word runs.

PERSON: a run of capitalised words is a name when a title comes before it (Mr, Dr …),
when it starts with a known first name and goes on with a surname-like word, or when a
known first name stands alone after a greeting or an introduction ("Hi Anna,", "my name
is Anna"). Runs that end in a street suffix or an organisation word, and words on the
stop list, are not names.

ADDRESS: a house number, up to four capitalised words and a street suffix (or the
European order: street with its -straße/-weg suffix, then the number; rue/via/calle
before the name), extended over a unit, city, region and postcode when they follow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from bastion.privacy.gazetteers import Gazetteers, load
from bastion.privacy.types import EntityType, Finding


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Upper- and lower-case Latin letters (ASCII, Latin-1, Latin Extended-A); apostrophes
# straight and curly (O'Brien, O\u2019Brien).
_APOS = "'\u2019"
_UP = "A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽ"
_LOW = "a-zß-öø-ÿā-ž"
_CAP = rf"(?:[{_UP}][{_APOS}]|Mc|Mac)?[{_UP}][{_LOW}]+(?:[{_APOS}\-][{_UP}]?[{_LOW}]+)*"
# One leading character class, so the expression fails at once on most positions; titles'
# dots and particles ("van der") are the gaps runs may have (`_joins`).
_TOKEN = re.compile(
    rf"\b(?:Ma?c(?=[{_UP}])|[{_UP}][{_APOS}](?=[{_UP}]))?[{_UP}]"
    rf"(?:[{_LOW}]+(?:[{_APOS}\-][{_UP}]?[{_LOW}]+)*|\.)"
)
_PARTICLES = _set("van von de da del der den di du le la bin al ibn") | {
    "van der",
    "van den",
    "von der",
    "de la",
}
_TITLES = _set(
    "Mr Mrs Ms Mx Miss Dr Prof Professor Sir Dame Lady Lord Madam Mme Mlle Herr Frau Rev "
    "Sr Sra Dott Capt Captain Judge Senator Officer Agent Nurse Coach Uncle Aunt"
)
_ORG = _set(
    "Inc Llc Ltd Corp Co Group Bank University College School Hospital Foundation "
    "Institute Labs Systems Technologies Partners Associates Holdings Airlines Hotel Gmbh "
    "Ag Sa Plc Company Clinic Church Museum Park Center Centre Council Ministry Agency "
    "Services Sons Brothers Bros Solutions Consulting Software Studios Media Capital "
    "Ventures Trust"
)
# Words just before a name that say it is one: strong ones admit a word no list knows
# ("Thanks Maryse"), weak ones only a known first name ("… and James").
_STRONG = (
    r"hi|hello|hey|dear|thanks|thank you|name is|name's|i am|i'm|this is|ask|contact|tell|"
    r"met|meet|named|signed|attn|patient|customer|client|employee|tenant|holder|reach|"
    r"colleague|wife|husband|son|daughter|mother|father|friend|mr|mrs|ms|dr|notes"
)
_WEAK = r"cheers|regards|sincerely|from|by|with|cc|to|call|manager|user|and"
_STRONG_CUES = frozenset(_STRONG.split("|"))
_WEAK_CUES = frozenset(_WEAK.split("|"))


_PUNCT = str.maketrans(',:;()[]<>"', "          ")


def _cue(text: str, start: int) -> int:
    """2 when a strong cue ends right before `start`, 1 for a weak one, else 0: the last
    one or two words before it, without punctuation, looked up in the cue sets."""
    words = text[max(0, start - 24) : start].lower().translate(_PUNCT).split()
    if not words:
        return 0
    last = words[-1].rstrip(".")
    two = " ".join(words[-2:]).rstrip(".")
    if last in _STRONG_CUES or two in _STRONG_CUES:
        return 2
    return 1 if last in _WEAK_CUES else 0


_AFTER_CUE = re.compile(
    r"^(?:,|:| said| says| wrote| asked| called| emailed| from| will| is| was| has| "
    r"and [A-Z]| \(| <)"
)
_SPEECH = re.compile(r"^ (?:said|says|wrote|asked|replied|called|emailed)\b| <[^ >]+@")

_SUFFIX = "(?:" + "|".join(sorted(load().street_suffixes, key=lambda s: (-len(s), s))) + ")"
_TAIL = (
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|#)\.?\s*#?[A-Za-z0-9\-]{1,6})?"
    rf"(?:,\s*(?:{_CAP})(?:\s(?:{_CAP})){{0,2}})?"
    r"(?:,?\s+[A-Z]{2}\b)?"
    r"(?:,?\s+(?:\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d)\b)?"
)
_EU_SUFFIXES = (
    "straße", "strasse", "str.", "weg", "gasse", "allee", "platz", "ring", "damm", "gracht",
    "laan", "straat", "plein", "vej", "gatan", "gata", "veien",
)  # fmt: skip
_ROMANCE = (
    "rue", "Rue", "avenue", "boulevard", "place", "chemin", "allée", "impasse", "quai", "Via",
    "via", "Viale", "Piazza", "Calle", "calle", "Avenida", "Plaza", "Rua", "Carrer",
)  # fmt: skip
# Each form with a substring test that must pass before its (slower) expression runs.
_ADDRESSES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # 221B Baker Street, London NW1 6XE / 1600 Pennsylvania Avenue NW, Washington, DC 20500
    (
        (),
        re.compile(
            rf"\b\d{{1,5}}[A-Za-z]?(?:-\d{{1,5}})?\s+(?:(?:{_CAP}|\d{{1,3}}(?:st|nd|rd|th))\s+){{0,4}}"
            rf"{_SUFFIX}\b\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?{_TAIL}"
        ),
    ),
    # Hauptstraße 5, 10115 Berlin / Keizersgracht 123, 1015 CJ Amsterdam
    (
        _EU_SUFFIXES,
        re.compile(
            rf"\b(?:{_CAP}[ -])?[{_UP}][{_LOW}]*(?:{'|'.join(map(re.escape, _EU_SUFFIXES))})"
            rf"\s+\d{{1,4}}[a-z]?(?:,\s*\d{{4,5}}(?:\s?[A-Z]{{2}})?\s+{_CAP}(?:\s{_CAP})?)?"
        ),
    ),
    # 12 rue de la Paix, 75002 Paris / Via Roma 12, 00184 Roma / Calle Mayor 5, Madrid
    (
        _ROMANCE,
        re.compile(
            rf"\b(?:\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+)?(?:{'|'.join(_ROMANCE)})\s+"
            rf"(?:(?:de|del|della|des|du|la|le|l'|d'|dos|da)\s*)*{_CAP}(?:\s{_CAP}){{0,2}}"
            rf"(?:,?\s+\d{{1,4}})?(?:,\s*\d{{4,5}}\s+{_CAP}(?:\s{_CAP})?)?"
        ),
    ),
    (("Box",), re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}" + _TAIL)),
)


# Street words that end a run which is a street's name, not a person's ("Martin Luther King
# Boulevard"); the long USPS list has surnames in it (Green, Park, Hill), so only these.
_STREETS = _set(
    "Street St Avenue Ave Road Rd Boulevard Blvd Lane Ln Drive Way Court Ct Place Terrace "
    "Square Parkway Highway Straße Strasse"
)


# Each guard's words as one expression: one pass over the text, not one per word.
_GUARDS = {g: re.compile("|".join(map(re.escape, g))) for g, _ in _ADDRESSES if g}

Token = tuple[int, int, str]


def tokens(text: str) -> list[Token]:
    """The capitalised words (and initials) of a text, with their offsets."""
    return [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]


def addresses(text: str, words: list[Token] | None = None) -> Iterator[Finding]:
    """Addresses; `words` (from `tokens`) lets the North American form run only where a
    street suffix is among the capitalised words."""
    taken: list[tuple[int, int]] = []
    suffixes = load().street_suffixes
    for guard, rx in _ADDRESSES:
        if guard and not _GUARDS[guard].search(text):
            continue
        if not guard and words is not None and not any(w in suffixes for _, _, w in words):
            continue
        for m in rx.finditer(text):
            start, end = m.start(), m.end()
            while end > start and text[end - 1] in ",. ":
                end -= 1
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            yield Finding(EntityType.ADDRESS, start, end, 0.85)


def _is_name_word(word: str, stop: frozenset[str]) -> bool:
    return word not in stop and word not in _ORG and word not in _TITLES


def _joins(text: str, previous: tuple[int, int, str], start: int) -> bool:
    """Whether a token starting at `start` continues the run ending with `previous`:
    one space between, or a title's dot ("Dr. Lee"), or particles ("van der")."""
    end = previous[1]
    if start == end + 1:
        return text[end] == " "
    gap = text[end:start]
    if gap == ". ":
        return previous[2] in _TITLES
    return gap[:1] == " " and gap[-1:] == " " and gap.strip(" ") in _PARTICLES


def persons(text: str, words: list[Token] | None = None) -> Iterator[Finding]:
    g = load()
    runs: list[list[tuple[int, int, str]]] = []
    stop, first_names = g.stopwords, g.first_names
    for token in tokens(text) if words is None else words:
        if runs and _joins(text, runs[-1][-1], token[0]):
            runs[-1].append(token)
        else:
            runs.append([token])
    for run in runs:
        i = 0
        while i < len(run):
            head = run[i][2]
            if head in stop and head not in first_names:
                i += 1  # most capitalised words: sentence starts
                continue
            found = _name_in(text, run[i : i + 5], g)
            if found is None:
                i += 1
                continue
            first, last, score = found
            yield Finding(EntityType.PERSON, run[i + first][0], run[i + last][1], score)
            i += last + 1


def _after_title(words: list[str], gz: Gazetteers) -> tuple[int, int, float] | None:
    """ "Dr. Swamy", "Ms. Ann O'Neill": up to three name words after the title."""
    k = 1
    while k < len(words) and k <= 3 and _is_name_word(words[k], gz.stopwords):
        k += 1
    if k > 1 and words[k - 1] not in _STREETS:
        return 1, k - 1, 0.9
    return None


def _extent(words: list[str], first: bool, gz: Gazetteers) -> int:
    """How many words from the start are name-like (not stop words, organisations or
    cities; initials pass), at most four, without trailing initials."""
    k = 0
    while k < len(words) and k < 4:
        w = words[k]
        name_like = _is_name_word(w, gz.stopwords) and w not in gz.cities
        if k == 0 and not name_like:
            # "April Johnson", "Will Smith": a first name that is also a word, with a surname.
            name_like = first and len(words) > 1 and words[1] in gz.surnames
        if not (name_like or (k and len(w) == 1)):
            break
        k += 1
    while k > 1 and len(words[k - 1]) == 1:
        k -= 1
    return k


def _name_in(
    text: str,
    run: list[tuple[int, int, str]],
    gz: Gazetteers,
) -> tuple[int, int, float] | None:
    """(first token, last token, score) of the name this run starts with, if any."""
    words = [w.rstrip(".") for _, _, w in run]
    head = words[0]
    if head in _TITLES:
        return _after_title(words, gz)
    first = head in gz.first_names or any(p in gz.first_names for p in head.split("-"))
    k = _extent(words, first, gz)
    if k == 0 or len(head) < 2:
        return None
    if k < len(run) and (words[k] in _ORG or words[k] in _STREETS):
        return None
    start = run[0][0]
    end = run[k - 1][1]
    cue_kind = _cue(text, start)
    cue = cue_kind == 2
    speech = _SPEECH.match(text[end : end + 40]) is not None
    if k > 1:
        last = words[k - 1]
        known_last = last in gz.surnames or last in gz.first_names
        if first:
            return 0, k - 1, 0.85 if known_last else 0.75
        if cue or speech or (known_last and not _sentence_start(text, start)):
            return 0, k - 1, 0.65 if known_last else 0.6
        return None
    # One word: after a cue or before a verb of speech; a word no list knows needs a
    # strong cue, and a hyphenated one ("Watkins-Stevens", a firm) a known first name.
    if first and (cue_kind or speech or _AFTER_CUE.match(text[end:])):
        return 0, 0, 0.6
    if "-" not in head and (cue or speech) and head not in gz.surnames:
        return 0, 0, 0.5
    return None


def _sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t")
    return not before or before[-1] in ".!?\n:;\"'("
