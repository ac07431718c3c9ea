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

from bastion.privacy.gazetteers import load
from bastion.privacy.types import EntityType, Finding

_UP = "A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽ"
_LOW = "a-zß-öø-ÿā-ž"
_CAP = rf"[{_UP}][{_LOW}]+(?:['’\-][{_UP}]?[{_LOW}]+)*"
_TOKEN = re.compile(rf"{_CAP}|[{_UP}]\.|(?:van|von|de|da|del|der|di|du|le|la|bin|al|ibn)(?= [{_UP}])")
_TITLES = frozenset(
    "Mr Mrs Ms Mx Miss Dr Prof Professor Sir Dame Lady Lord Madam Mme Mlle Herr Frau Rev "
    "Sr Sra Dott Capt Captain Judge Senator Officer Agent Nurse Coach Uncle Aunt".split()
)
_ORG = frozenset(
    "Inc Llc Ltd Corp Co Group Bank University College School Hospital Foundation Institute "
    "Labs Systems Technologies Partners Associates Holdings Airlines Hotel Gmbh Ag Sa Plc "
    "Company Clinic Church Museum Park Center Centre Council Ministry Agency Services".split()
)
# Words just before a lone first name that say it is one.
_CUE = re.compile(
    r"(?:\b(?:hi|hello|hey|dear|thanks|thank you|cheers|regards|sincerely|from|by|with|"
    r"cc|to|ask|contact|tell|call|met|meet|named|name is|name's|i am|i'm|this is|"
    r"signed|attn|att|patient|customer|employee|user|manager|colleague|wife|husband|"
    r"son|daughter|mother|father|friend|and)[\s,:]*)$",
    re.IGNORECASE,
)
_AFTER_CUE = re.compile(
    r"^(?:,|:| said| says| wrote| asked| called| emailed| from| will| is| was| has| "
    r"and [A-Z]| \()"
)

_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct|Place|Pl|"
    r"Terrace|Ter|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Crescent|Cres|Close|Row|"
    r"Mews|Gardens|Grove|Hill|Trail|Alley|Walk|Path|Loop|Plaza|Parade|Broadway)"
)
_TAIL = (
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|#)\.?\s*#?[A-Za-z0-9\-]{1,6})?"
    rf"(?:,\s*(?:{_CAP})(?:\s(?:{_CAP})){{0,2}})?"
    r"(?:,?\s+[A-Z]{2}\b)?"
    r"(?:,?\s+(?:\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d)\b)?"
)
_ADDRESS = re.compile(
    "|".join(
        (
            # 221B Baker Street, London NW1 6XE / 1600 Pennsylvania Avenue NW, Washington, DC 20500
            rf"\b\d{{1,5}}[A-Za-z]?(?:-\d{{1,5}})?\s+(?:(?:{_CAP}|\d{{1,3}}(?:st|nd|rd|th))\s+){{0,4}}"
            rf"{_SUFFIX}\b\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?{_TAIL}",
            # Hauptstraße 5, 10115 Berlin / Keizersgracht 123, 1015 CJ Amsterdam
            rf"\b(?:{_CAP}[ -])?[{_UP}][{_LOW}]*(?:straße|strasse|str\.|weg|gasse|allee|platz|"
            rf"ring|damm|gracht|laan|straat|plein|vej|gatan|gata|veien)\s+\d{{1,4}}[a-z]?"
            rf"(?:,\s*\d{{4,5}}(?:\s?[A-Z]{{2}})?\s+{_CAP}(?:\s{_CAP})?)?",
            # 12 rue de la Paix, 75002 Paris / Via Roma 12, 00184 Roma / Calle Mayor 5, Madrid
            rf"\b(?:\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+)?(?:rue|Rue|avenue|boulevard|place|chemin|"
            rf"allée|impasse|quai|Via|via|Viale|Piazza|Calle|calle|Avenida|Plaza|Rua|Carrer)\s+"
            rf"(?:(?:de|del|della|des|du|la|le|l'|d'|dos|da)\s*)*{_CAP}(?:\s{_CAP}){{0,2}}"
            rf"(?:,?\s+\d{{1,4}})?(?:,\s*\d{{4,5}}\s+{_CAP}(?:\s{_CAP})?)?",
            r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}" + _TAIL,
        )
    )
)


def addresses(text: str) -> Iterator[Finding]:
    for m in _ADDRESS.finditer(text):
        value = m.group()
        if not any(c.isdigit() for c in value):
            continue
        end = m.end()
        while end > m.start() and text[end - 1] in ",. ":
            end -= 1
        yield Finding(EntityType.ADDRESS, m.start(), end, 0.85)


def _is_name_word(word: str, stop: frozenset[str]) -> bool:
    return word not in stop and word not in _ORG and word not in _TITLES


def persons(text: str) -> Iterator[Finding]:
    g = load()
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
    i, n = 0, len(tokens)
    while i < n:
        start, end, word = tokens[i]
        # The run of tokens separated by single spaces, from here.
        run = [tokens[i]]
        j = i + 1
        while j < n and tokens[j][0] == run[-1][1] + 1 and text[run[-1][1]] == " ":
            run.append(tokens[j])
            j += 1
        found = _name_in(text, run, g)
        if found is None:
            i += 1
            continue
        first, last, score = found
        yield Finding(EntityType.PERSON, run[first][0], run[last][1], score)
        i += last + 1


def _name_in(text: str, run: list[tuple[int, int, str]], g: object) -> tuple[int, int, float] | None:
    gz = load()
    words = [w.rstrip(".") for _, _, w in run]
    head = words[0]
    if head in _TITLES and len(run) > 1:
        k = 1
        while k < len(run) and k <= 3 and _is_name_word(words[k], gz.stopwords):
            k += 1
        if k > 1 and words[k - 1] not in gz.street_suffixes:
            return 1, k - 1, 0.9
        return None
    if len(head) < 2 or head in _ORG:
        return None
    first = head in gz.first_names
    if not first or (head in gz.stopwords and (len(run) < 2 or words[1] not in gz.surnames)):
        return None
    # First name, then initials, first or last names, up to four words.
    k = 1
    while k < len(run) and k < 4:
        w = words[k]
        if len(w) == 1 or (_is_name_word(w, gz.stopwords) and w not in gz.cities):
            k += 1
        else:
            break
    if k < len(run) and (words[k] in _ORG or words[k] in gz.street_suffixes):
        return None
    while k > 1 and len(words[k - 1]) == 1:
        k -= 1
    if k > 1:
        known = words[k - 1] in gz.surnames or words[k - 1] in gz.first_names
        return 0, k - 1, 0.85 if known else 0.7
    # A first name alone: only after a cue or before a verb of speech.
    start, end, _ = run[0]
    before = text[max(0, start - 24) : start]
    if _CUE.search(before) or _AFTER_CUE.match(text[end : end + 12]):
        return 0, 0, 0.6
    return None
