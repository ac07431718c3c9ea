"""Generate the privacy detector's dev evaluation set (tests/privacy/data/devset.jsonl).

    python -m bench.privacy_devset            # rewrites the committed file (seeded)

Texts are built from templates written here and fillers drawn from Faker (several
locales) and from generators of valid numbers (Luhn, mod-97, SSN ranges, numbering
plans); each text carries its gold spans in code points. About a quarter of the
texts are hard negatives: order numbers, version strings, UUIDs, hashes, timestamps,
Luhn-invalid card-like digits, IBANs with a bad checksum, capitalised non-names.
The detector never reads this set or these templates; its gazetteers come from
elsewhere (src/bastion/privacy/data/NOTICE.md).
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import sys
from pathlib import Path

import phonenumbers
from faker import Faker

OUT = Path(__file__).resolve().parent.parent / "tests" / "privacy" / "data" / "devset.jsonl"
LOCALES = ["en_US", "en_US", "en_US", "en_GB", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT",
           "nl_NL", "en_IN", "pl_PL"]  # fmt: skip
R = random.Random(1729)
FAKERS = {loc: Faker(loc) for loc in set(LOCALES)}
for i, f in enumerate(FAKERS.values()):
    f.seed_instance(100 + i)


def faker() -> Faker:
    return FAKERS[R.choice(LOCALES)]


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(R.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return body + str((10 - total % 10) % 10)


def card(valid: bool = True) -> str:
    prefix, length = R.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15),
                               ("6011", 16), ("3528", 16), ("4", 19)])  # fmt: skip
    number = luhn_complete(prefix, length)
    if not valid:
        number = number[:-1] + str((int(number[-1]) + R.randint(1, 9)) % 10)
    if length == 15 and R.random() < 0.7:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    sep = R.choice([" ", "-", ""])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def ssn() -> str:
    area = R.choice([n for n in range(1, 900) if n != 666])
    sep = R.choice(["-", "-", "-", " "])
    return f"{area:03d}{sep}{R.randint(1, 99):02d}{sep}{R.randint(1, 9999):04d}"


_IBAN = {"DE": (18, "n"), "GB": (18, "a4n14"), "FR": (23, "n"), "NL": (14, "a4n10"),
         "ES": (20, "n"), "IT": (23, "a1n22"), "BE": (12, "n"), "CH": (17, "n")}  # fmt: skip


def iban(valid: bool = True) -> str:
    country = R.choice(list(_IBAN))
    length, shape = _IBAN[country]
    if shape.startswith("a"):
        letters = int(shape[1 : shape.index("n")])
        bban = "".join(R.choice(string.ascii_uppercase) for _ in range(letters))
        bban += "".join(R.choice(string.digits) for _ in range(length - letters))
    else:
        bban = "".join(R.choice(string.digits) for _ in range(length))
    numeric = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - numeric % 97
    if not valid:
        check = (check + R.randint(1, 50)) % 97 + 2
    value = f"{country}{check:02d}{bban}"
    if R.random() < 0.6:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


_PHONE_SHAPES = {
    "US": ["({a}) {b}-{c}", "{a}-{b}-{c}", "+1 {a} {b} {c}", "+1-{a}-{b}-{c}", "{a}.{b}.{c}"],
    "GB": ["+44 20 {b4} {c}", "020 {b4} {c}", "+44 7{m3} {c6}", "07{m3} {c6}"],
    "DE": ["+49 30 {d8}", "030 {d8}", "+49 151 {d8}"],
    "FR": ["+33 1 {p2} {p2} {p2} {p2}", "01 {p2} {p2} {p2} {p2}", "+33 6 {p2} {p2} {p2} {p2}"],
    "IN": ["+91 9{m4} {c5}", "+91-9{m4}-{c5}"],
    "AU": ["+61 2 {b4} {c}", "+61 4{m2} {b3} {b3}"],
}


def phone() -> str:
    for _ in range(200):
        region = R.choice(["US", "US", "US", "GB", "DE", "FR", "IN", "AU"])
        shape = R.choice(_PHONE_SHAPES[region])

        def d(n: int) -> str:
            return "".join(R.choice(string.digits) for _ in range(n))

        value = shape.format(
            a=R.choice(["212", "415", "646", "312", "617", "202", "305", "512", "206", "718"]),
            b=str(R.randint(201, 989)), c=d(4), b4=d(4), b3=d(3), m2=d(2), m3=d(3), m4=d(4),
            c5=d(5), c6=d(6), d8=str(R.randint(2, 9)) + d(7), p2=d(2),
        )  # fmt: skip
        parsed = phonenumbers.parse(value, region)
        if phonenumbers.is_valid_number(parsed):
            return value
    raise RuntimeError("no valid phone number drawn")


def ipv4() -> str:
    first = R.choice([10, 172, 192, 34, 52, 81, 185, 203, 8, 100])
    return f"{first}.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}"


def ipv6() -> str:
    groups = [f"{R.randint(0, 0xFFFF):x}" for _ in range(8)]
    if R.random() < 0.5:
        return "2001:db8::" + ":".join(groups[5:])
    return ":".join(groups)


def rand(alphabet: str, n: int) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits


def jwt() -> str:
    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = b64({"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    payload = b64({"sub": rand(string.digits, 8), "iat": R.randint(1.6e9, 1.8e9)})
    return f"{header}.{payload}.{rand(ALNUM + '-_', 43)}"


def private_key() -> str:
    kind = R.choice(["RSA ", "EC ", "", "OPENSSH "])
    lines = "\n".join(rand(ALNUM + "+/", 64) for _ in range(R.randint(3, 6)))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"


def api_key() -> str:
    return R.choice(
        [
            lambda: "sk-proj-" + rand(ALNUM + "_-", 48),
            lambda: "sk-ant-api03-" + rand(ALNUM + "_-", 60),
            lambda: "sk_live_" + rand(ALNUM, 24),
            lambda: "xoxb-" + rand(string.digits, 12) + "-" + rand(ALNUM, 24),
            lambda: "AIza" + rand(ALNUM + "_-", 35),
            lambda: "hf_" + rand(ALNUM, 34),
            lambda: "glpat-" + rand(ALNUM + "_-", 20),
            lambda: (
                "bsk_" + rand(string.ascii_lowercase + string.digits, 10) + "_" + rand(ALNUM, 32)
            ),
            lambda: "bat_" + rand(ALNUM, 40),
        ]
    )()


def address(f: Faker) -> str:
    loc = f.locales[0] if hasattr(f, "locales") else "en_US"
    if loc in ("en_US", "en_IN", "pl_PL", "es_ES", "it_IT", "nl_NL") or R.random() < 0.2:
        us = FAKERS["en_US"]
        street = R.choice([us.street_address(), f"{R.randint(1, 9999)} {us.last_name()} "
                          + R.choice(["Street", "Avenue", "Road", "Lane", "Drive", "St", "Ave",
                                      "Blvd", "Court", "Way", "Place"])])  # fmt: skip
        tail = R.choice([f", {us.city()}, {us.state_abbr()} {us.zipcode()}", f", {us.city()}", ""])
        return street + tail
    if loc == "en_GB":
        return (f"{R.randint(1, 250)} {f.last_name()} " + R.choice(["Road", "Street", "Lane",
                "Close", "Gardens", "Crescent"]) + f", {f.city()} {f.postcode()}")  # fmt: skip
    if loc == "de_DE":
        return f"{f.last_name()}{R.choice(['straße', 'weg', 'allee', 'gasse'])} " + (
            f"{R.randint(1, 120)}, {f.postcode()} {f.city()}"
        )
    return f"{R.randint(1, 90)} rue {R.choice(['de la', 'du', 'des'])} {f.last_name()}, " + (
        f"{f.postcode()} {f.city()}"
    )


_F = FAKERS["en_US"]
FILLERS = {
    "PERSON": ("PERSON", lambda f: f"{f.first_name()} {f.last_name()}"),
    "FIRST": ("PERSON", lambda f: f.first_name()),
    "LAST": ("PERSON", lambda f: f.last_name()),
    "EMAIL": ("EMAIL", lambda f: f.email()),
    "PHONE": ("PHONE", lambda f: phone()),
    "CARD": ("CREDIT_CARD", lambda f: card()),
    "SSN": ("US_SSN", lambda f: ssn()),
    "IBAN": ("IBAN", lambda f: iban()),
    "IP": ("IP_ADDRESS", lambda f: ipv4()),
    "IP6": ("IP_ADDRESS", lambda f: ipv6()),
    "AWS": ("AWS_ACCESS_KEY", lambda f: "AKIA" + rand(string.ascii_uppercase + "234567", 16)),
    "GH": ("GITHUB_TOKEN", lambda f: "ghp_" + rand(ALNUM, 36)),
    "GHPAT": ("GITHUB_TOKEN", lambda f: f"github_pat_{rand(ALNUM, 22)}_{rand(ALNUM, 59)}"),
    "JWT": ("JWT", lambda f: jwt()),
    "PEM": ("PRIVATE_KEY", lambda f: private_key()),
    "APIKEY": ("API_KEY", lambda f: api_key()),
    "KEYVAL": ("API_KEY", lambda f: rand(ALNUM, R.randint(24, 40))),
    "ADDRESS": ("ADDRESS", address),
    # Hard negatives: no gold span.
    "order": (None, lambda f: str(R.randint(10**7, 10**12))),
    "version": (None, lambda f: ".".join(str(R.randint(0, 30)) for _ in range(4))),
    "semver": (None, lambda f: f"{R.randint(0, 9)}.{R.randint(0, 30)}.{R.randint(0, 99)}"),
    "uuid": (None, lambda f: f.uuid4()),
    "sha": (None, lambda f: rand("0123456789abcdef", R.choice([40, 64]))),
    "ts": (
        None,
        lambda f: f.date_time().strftime(
            R.choice(["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%H:%M:%S", "%d/%m/%Y %H:%M"])
        ),
    ),
    "badcard": (None, lambda f: card(valid=False)),
    "badiban": (None, lambda f: iban(valid=False)),
    "price": (None, lambda f: f"${R.randint(1, 99999):,}.{R.randint(0, 99):02d}"),
    "isbn": (
        None,
        lambda f: (
            f"978-{R.randint(0, 9)}-{R.randint(10, 99)}-"
            f"{R.randint(100000, 999999)}-{R.randint(0, 9)}"
        ),
    ),
    "mac": (None, lambda f: ":".join(f"{R.randint(0, 255):02X}" for _ in range(6))),
    "nine": (None, lambda f: str(R.randint(10**8, 10**9 - 1))),
    "product": (
        None,
        lambda f: R.choice(
            [
                "Google Cloud Platform",
                "Visual Studio Code",
                "Apple Pay",
                "Microsoft Teams",
                "Amazon Web Services",
                "Slack Connect",
                "Jira Service Desk",
                "Power BI",
                "Red Hat Enterprise Linux",
                "Azure Active Directory",
            ]
        ),
    ),
    "city": (
        None,
        lambda f: R.choice(
            [
                "San Francisco",
                "New York",
                "Berlin",
                "Paris",
                "Tokyo",
                "Chicago",
                "London",
                "Madrid",
                "Toronto",
                "Sydney",
            ]
        ),
    ),
    "day": (None, lambda f: R.choice(["Monday", "Tuesday", "Friday", "next Thursday"])),
    "company": (None, lambda f: _F.company()),
}

TEMPLATES = [
    "Hi {FIRST}, thanks for reaching out. Could you confirm the email on file ({EMAIL})?",
    "Customer {PERSON} called from {PHONE} about a refund for order #{order}.",
    "Please ship the replacement to {ADDRESS}. Contact: {PERSON}, {PHONE}.",
    "My name is {PERSON} and my card {CARD} was charged twice on {ts}.",
    "Dear {PERSON},\nYour SSN {SSN} has been verified. Regards, {company}",
    "Wire the deposit to IBAN {IBAN} (account holder: {PERSON}).",
    "Dr. {LAST} will see the patient at {ADDRESS} on {day}.",
    "Forwarding from {EMAIL}: {FIRST} says the invoice {order} is wrong.",
    "Login from {IP} at {ts} by user {EMAIL}.",
    "Failed SSH attempt from {IP6} (user {FIRST}).",
    "export AWS_ACCESS_KEY_ID={AWS}\nexport REGION=us-east-1",
    "git remote set-url origin https://{GH}@github.com/acme/app.git",
    "Use token {GHPAT} for the CI job (rotate after {day}).",
    "Authorization: Bearer {JWT}",
    "Here is the deploy key, don't share it:\n{PEM}",
    "OPENAI_API_KEY={APIKEY}",
    'config = {{"api_key": "{KEYVAL}", "timeout": 30}}',
    "{PERSON} ({EMAIL}) moved to {ADDRESS}; new mobile {PHONE}.",
    "Spoke with {PERSON} today, follow up {day}.",
    "Ms. {LAST} asked us to update her billing address to {ADDRESS}.",
    "Thanks {FIRST}! I'll send the contract to {EMAIL} tonight.",
    "Payment declined for card {CARD}; customer {PERSON} will retry.",
    "Employee {PERSON}, SSN: {SSN}, started on {ts}.",
    "Send the refund to {IBAN}, reference {order}.",
    "Server {IP} rejected key {APIKEY} at {ts}.",
    "{PERSON} <{EMAIL}> wrote: can you call me at {PHONE}?",
    "Tenant {PERSON} lives at {ADDRESS} and pays by card {CARD}.",
    "Reach {FIRST} on {PHONE} or at the office, {ADDRESS}.",
    "Meeting notes: {PERSON} and {PERSON} agreed to migrate {product} by {day}.",
    "Patient: {PERSON}\nDOB: 1984-02-11\nPhone: {PHONE}\nAddress: {ADDRESS}",
    "The agent leaked {AWS} and {GH} into the transcript; revoke both.",
    "session={JWT}; Path=/; HttpOnly",
    "Ask {FIRST} whether {IP} is still the VPN gateway.",
]
NEGATIVE_TEMPLATES = [
    "Order {order} shipped on {ts}; tracking number {order}.",
    "Upgraded to version {version} (build {semver}) on {day}.",
    "Request id {uuid} completed in 231 ms at {ts}.",
    "Commit {sha} fixes the flaky test; release {semver}.",
    "The test card {badcard} was rejected by the Luhn check.",
    "IBAN {badiban} failed validation (bad checksum).",
    "Invoice {nine} total {price}, due {day}.",
    "ISBN {isbn}, price {price}, in stock in {city}.",
    "Device {mac} reported firmware {version} at {ts}.",
    "Please Review The Attached Quarterly Report Before {day}.",
    "We are migrating from {product} to {product} in {city}.",
    "Build {version} passed on {day}; artifacts hashed with sha256 {sha}.",
    "Case {order} escalated to {company} support at {ts}.",
    "Quarterly Business Review with {company} in {city} on {day}.",
    "Timestamp {ts}, latency 12.5.3.1 ms buckets, object {uuid}.",
    "The Board approved the New Office Plan for {city}.",
]


def fill(template: str) -> dict[str, object]:
    f = faker()
    text: list[str] = []
    spans: list[dict[str, object]] = []
    pos = 0
    length = 0
    for m in re.finditer(r"\{\{|\}\}|\{(\w+)\}", template):
        literal = template[pos : m.start()]
        text.append(literal)
        length += len(literal)
        pos = m.end()
        if m.group(1) is None:
            text.append(m.group()[0])
            length += 1
            continue
        kind, make = FILLERS[m.group(1)]
        value = make(f).replace("\n", ", ") if m.group(1) == "ADDRESS" else make(f)
        if kind is not None:
            spans.append({"type": kind, "start": length, "end": length + len(value)})
        text.append(value)
        length += len(value)
    text.append(template[pos:])
    return {"text": "".join(text), "spans": spans}


def generate(n_positive: int = 520, n_negative: int = 180) -> list[dict[str, object]]:
    rows = [fill(TEMPLATES[i % len(TEMPLATES)]) for i in range(n_positive)]
    rows += [fill(NEGATIVE_TEMPLATES[i % len(NEGATIVE_TEMPLATES)]) for i in range(n_negative)]
    R.shuffle(rows)
    return rows


def main() -> None:
    rows = generate()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} texts, {sum(len(r['spans']) for r in rows)} spans -> {OUT}")  # type: ignore[arg-type,misc]


if __name__ == "__main__":
    sys.exit(main())
