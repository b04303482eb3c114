"""Generate ``workloads/eval/canary.jsonl``: the canary eval set, 600 items in five balanced
categories, deterministic (no clock, no ``random`` module: a counter hashed with blake2b, so
every Python version writes the same bytes).

    python workloads/eval/make_canary_eval.py           # rewrite the file
    python workloads/eval/make_canary_eval.py --check   # exit 1 if the file is out of date

Categories (120 items each): ``arithmetic`` (sums, differences, products, precedence),
``primality`` ("is N prime?", 60 primes and 60 composites, so always answering one way
scores 50%), ``unit_conversion`` (answers rounded to 2 decimals, ``tolerance`` 0.005),
``fact_lookup`` (capitals, chemical symbols, elements by atomic number, from the tables
below) and ``json_extraction`` (a sentence -> a JSON object, with its JSON ``schema``; the
40 items about a person, name, age and city, are tagged ``"tags": ["pii"]``, the sensitive
items a hybrid router keeps on the self-hosted model).

Every item has ``difficulty`` in (0, 1): within a category the items are ranked by a
hardness score (more digits, carries, affine conversions, less famous facts, distractors)
and spread evenly, difficulty = (rank + 0.5) / 120, so a category's difficulties are the
quantiles of a uniform distribution (the simulator maps them to a normal latent; evenly
spread quantiles keep its mean accuracy equal to the configured ``accuracy``).
``format`` names the answer's expected form (number, yesno, short, json) and ``regex`` an
assertion the output must match (fact and primality items). Prompts never equal a prompt of
``basic_qa.jsonl`` (the simulator matches prompts verbatim across all eval files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

OUT = Path(__file__).resolve().parent / "canary.jsonl"
PER_CATEGORY = 120
SEED = "canary-eval-v1"


class Draws:
    """Deterministic integers from blake2b(seed, stream, counter): stable across versions."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.i = 0

    def below(self, n: int) -> int:
        self.i += 1
        key = f"{SEED}\x1f{self.stream}\x1f{self.i}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % n

    def between(self, lo: int, hi: int) -> int:
        return lo + self.below(hi - lo + 1)

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def shuffle(self, xs: list) -> list:
        for i in range(len(xs) - 1, 0, -1):
            j = self.below(i + 1)
            xs[i], xs[j] = xs[j], xs[i]
        return xs


# ------------------------------------------------------------------ tables (facts)

# (country, capital), roughly most to least familiar; contested or two-capital countries
# are left out so each item has one right answer.
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("United Kingdom", "London"), ("China", "Beijing"),
    ("Russia", "Moscow"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Egypt", "Cairo"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"),
    ("Austria", "Vienna"), ("Sweden", "Stockholm"), ("Norway", "Oslo"),
    ("Denmark", "Copenhagen"), ("Finland", "Helsinki"), ("Poland", "Warsaw"),
    ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"), ("Brazil", "Brasília"),
    ("India", "New Delhi"), ("South Korea", "Seoul"), ("Thailand", "Bangkok"),
    ("Turkey", "Ankara"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Cuba", "Havana"), ("Hungary", "Budapest"), ("Czech Republic", "Prague"),
    ("Belgium", "Brussels"), ("Switzerland", "Bern"), ("New Zealand", "Wellington"),
    ("Vietnam", "Hanoi"), ("Philippines", "Manila"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"), ("Colombia", "Bogotá"), ("Venezuela", "Caracas"),
    ("Ukraine", "Kyiv"), ("Romania", "Bucharest"), ("Nigeria", "Abuja"), ("Ghana", "Accra"),
    ("Ethiopia", "Addis Ababa"), ("Morocco", "Rabat"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"), ("Afghanistan", "Kabul"),
    ("Iceland", "Reykjavik"), ("Malaysia", "Kuala Lumpur"), ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Jordan", "Amman"),
    ("Lebanon", "Beirut"), ("Syria", "Damascus"), ("Algeria", "Algiers"),
    ("Tunisia", "Tunis"), ("Senegal", "Dakar"), ("Ecuador", "Quito"),
    ("Uruguay", "Montevideo"), ("Paraguay", "Asunción"), ("Jamaica", "Kingston"),
    ("Qatar", "Doha"), ("Mongolia", "Ulaanbaatar"), ("Latvia", "Riga"),
    ("Lithuania", "Vilnius"), ("Estonia", "Tallinn"), ("Slovakia", "Bratislava"),
    ("Slovenia", "Ljubljana"), ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"),
    ("Azerbaijan", "Baku"), ("Uzbekistan", "Tashkent"), ("Kazakhstan", "Astana"),
    ("Cambodia", "Phnom Penh"), ("Laos", "Vientiane"), ("Zimbabwe", "Harare"),
    ("Zambia", "Lusaka"), ("Uganda", "Kampala"), ("Angola", "Luanda"),
    ("Sudan", "Khartoum"), ("Libya", "Tripoli"), ("Cyprus", "Nicosia"), ("Malta", "Valletta"),
]  # fmt: skip

# (element, symbol, atomic number), by atomic number.
ELEMENTS = [
    ("hydrogen", "H", 1), ("helium", "He", 2), ("lithium", "Li", 3), ("beryllium", "Be", 4),
    ("boron", "B", 5), ("carbon", "C", 6), ("nitrogen", "N", 7), ("oxygen", "O", 8),
    ("fluorine", "F", 9), ("neon", "Ne", 10), ("sodium", "Na", 11), ("magnesium", "Mg", 12),
    ("silicon", "Si", 14), ("phosphorus", "P", 15), ("chlorine", "Cl", 17),
    ("argon", "Ar", 18), ("potassium", "K", 19), ("calcium", "Ca", 20),
    ("scandium", "Sc", 21), ("titanium", "Ti", 22), ("vanadium", "V", 23),
    ("chromium", "Cr", 24), ("manganese", "Mn", 25), ("iron", "Fe", 26), ("cobalt", "Co", 27),
    ("nickel", "Ni", 28), ("copper", "Cu", 29), ("zinc", "Zn", 30), ("gallium", "Ga", 31),
    ("germanium", "Ge", 32), ("arsenic", "As", 33), ("selenium", "Se", 34),
    ("bromine", "Br", 35), ("krypton", "Kr", 36), ("rubidium", "Rb", 37),
    ("strontium", "Sr", 38), ("silver", "Ag", 47), ("tin", "Sn", 50), ("iodine", "I", 53),
    ("xenon", "Xe", 54), ("barium", "Ba", 56), ("tungsten", "W", 74), ("platinum", "Pt", 78),
    ("gold", "Au", 79), ("mercury", "Hg", 80), ("lead", "Pb", 82), ("radon", "Rn", 86),
    ("uranium", "U", 92), ("plutonium", "Pu", 94),
]  # fmt: skip
# Symbols that are the element's initials are easier than Fe, Na, K, Ag, Sn, W, Au, Hg, Pb.
_LATIN = {"Na", "K", "Fe", "Cu", "Ag", "Sn", "W", "Au", "Hg", "Pb"}

FIRST = ["Maria", "James", "Aiko", "Omar", "Lena", "Pedro", "Chen", "Fatima", "Noah",
         "Ingrid", "Ravi", "Sofia", "Kwame", "Elena", "Tomas", "Yuki", "Amara", "Lucas",
         "Zainab", "Mateo"]  # fmt: skip
LAST = ["Lopez", "Smith", "Tanaka", "Haddad", "Fischer", "Silva", "Wang", "Khan", "Brown",
        "Berg", "Patel", "Rossi", "Mensah", "Petrova", "Novak", "Sato", "Okafor", "Martin",
        "Ali", "Garcia"]  # fmt: skip
PRODUCTS = ["desk lamp", "notebook", "coffee grinder", "bike helmet", "yoga mat", "kettle",
            "phone case", "backpack", "water bottle", "keyboard", "umbrella", "frying pan"]  # fmt: skip
EVENTS = ["book fair", "marathon", "jazz festival", "science expo", "chess tournament",
          "food market", "film festival", "robotics contest", "flower show", "charity gala"]  # fmt: skip
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]  # fmt: skip


# ------------------------------------------------------------------ categories
# Each maker returns (hardness, item fields without id/difficulty) tuples; hardness ties are
# broken by a seeded draw so the ranking is total.

NUMBER_ONLY = "Reply with the number only."


def arithmetic(d: Draws) -> list[tuple[float, dict]]:
    out = []
    seen: set[str] = set()
    kinds = ["add", "sub", "mul", "mix"]
    while len(out) < PER_CATEGORY:
        kind = kinds[len(out) % 4]
        size = 1 + len(out) // 4 % 3  # 1..3: operand size tier
        if kind == "add":
            a, b = d.between(10**size, 10 ** (size + 1) - 1), d.between(10, 10 ** (size + 1) - 1)
            text, value = f"{a} + {b}", a + b
            carries = sum(
                int(x) + int(y) >= 10 for x, y in zip(str(a)[::-1], str(b)[::-1], strict=False)
            )
            hard = size + 0.3 * carries
        elif kind == "sub":
            a, b = d.between(10, 10 ** (size + 1) - 1), d.between(10, 10 ** (size + 1) - 1)
            text, value = f"{a} - {b}", a - b
            hard = size + 0.5 + (0.5 if value < 0 else 0)
        elif kind == "mul":
            a, b = d.between(11, 10 ** (size + 1) - 1), d.between(3, 10 * size + 9)
            text, value = f"{a} * {b}", a * b
            hard = size + 1 + 0.2 * len(str(b))
        else:
            a, b, c = d.between(2, 60), d.between(2, 9 + 3 * size), d.between(2, 9 + 3 * size)
            text, value = f"{a} + {b} * {c}", a + b * c
            hard = size + 1.5
        prompt = f"Calculate {text}. {NUMBER_ONLY}"
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append((hard, {"category": "arithmetic", "prompt": prompt, "answer": str(value),
                           "format": "number"}))  # fmt: skip
    return out


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    f = 2
    while f * f <= n:
        if n % f == 0:
            return False
        f += 1
    return True


def _smallest_factor(n: int) -> int:
    return next(f for f in range(2, n + 1) if n % f == 0)


def primality(d: Draws) -> list[tuple[float, dict]]:
    half = PER_CATEGORY // 2
    primes: set[int] = set()
    composites: set[int] = set()
    tiers = [(11, 100), (100, 1000), (1000, 10000), (10000, 50000)]
    while len(primes) < half:
        lo, hi = tiers[len(primes) % 4]
        n = d.between(lo, hi)
        while not _is_prime(n):
            n += 1
        primes.add(n)
    while len(composites) < half:
        lo, hi = tiers[len(composites) % 4]
        if len(composites) % 3 == 0:  # easy: even or a multiple of 5
            n = d.between(lo, hi) // 10 * 10 + d.choice([2, 4, 5, 6, 8])
        else:  # hard: odd, no factor 3 or 5: a product of two primes >= 7
            p = d.choice([7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61])
            q = max(7, d.between(lo, hi) // p)
            while not _is_prime(q):
                q += 1
            n = p * q
        if not _is_prime(n) and n > 10:
            composites.add(n)
    out = []
    for n in sorted(primes) + sorted(composites):
        prime = _is_prime(n)
        f = None if prime else _smallest_factor(n)
        # Larger numbers are harder; a prime, or a composite with no small factor, needs
        # more trial divisions than an even number.
        hard = len(str(n)) + (1.0 if prime else 0.0 if f in (2, 5) else 0.6 + 0.02 * f)
        ans = "yes" if prime else "no"
        out.append((hard, {"category": "primality",
                           "prompt": f"Is {n} a prime number? Reply with yes or no.",
                           "answer": ans, "format": "yesno",
                           "regex": rf"(?i)^\W*{ans}\b"}))  # fmt: skip
    return out


_TWO = Decimal("0.01")
# (from, to, factor as an exact decimal string, offset in, offset out, affine?):
# value_out = (value_in - offset_in) * factor + offset_out.
CONVERSIONS = [
    ("kilometres", "miles", "0.621371192237334", 0, 0),
    ("miles", "kilometres", "1.609344", 0, 0),
    ("kilograms", "pounds", "2.20462262184878", 0, 0),
    ("pounds", "kilograms", "0.45359237", 0, 0),
    ("inches", "centimetres", "2.54", 0, 0),
    ("centimetres", "inches", "0.393700787401575", 0, 0),
    ("litres", "US gallons", "0.264172052358148", 0, 0),
    ("US gallons", "litres", "3.785411784", 0, 0),
    ("feet", "metres", "0.3048", 0, 0),
    ("ounces", "grams", "28.349523125", 0, 0),
    ("degrees Celsius", "degrees Fahrenheit", "1.8", 0, 32),
    ("degrees Fahrenheit", "degrees Celsius", "0.555555555555556", 32, 0),
]


def unit_conversion(d: Draws) -> list[tuple[float, dict]]:
    out = []
    seen: set[str] = set()
    while len(out) < PER_CATEGORY:
        src, dst, factor, off_in, off_out = CONVERSIONS[len(out) % len(CONVERSIONS)]
        tier = len(out) // len(CONVERSIONS) % 3
        lo = off_in + 1
        x = d.between(lo, lo + (9, 99, 499)[tier])
        value = ((Decimal(x) - off_in) * Decimal(factor) + off_out).quantize(_TWO, ROUND_HALF_EVEN)
        prompt = (f"Convert {x} {src} to {dst}. Reply with the number only, rounded to 2 "
                  "decimal places.")  # fmt: skip
        if prompt in seen:
            continue
        seen.add(prompt)
        hard = tier + len(str(x)) * 0.3 + (1.5 if off_in or off_out else 0.0)
        hard += 0.5 if factor not in ("2.54", "0.3048", "1.609344") else 0.0
        out.append((hard, {"category": "unit_conversion", "prompt": prompt,
                           "answer": f"{value:.2f}", "format": "number",
                           "tolerance": 0.005}))  # fmt: skip
    return out


def fact_lookup(d: Draws) -> list[tuple[float, dict]]:
    out = []
    for rank, (country, capital) in enumerate(CAPITALS[:60]):
        out.append((rank / 60 * 2, _fact(f"Name the capital city of {country}. Reply with the "
                                          "city name only.", capital)))  # fmt: skip
    for rank, (name, sym, _) in enumerate(ELEMENTS[:40]):
        hard = 0.5 + (1.5 if sym in _LATIN else 0.0) + rank / 40
        out.append((hard, _fact(f"Give the chemical symbol of {name}. Reply with the symbol "
                                "only.", sym)))  # fmt: skip
    picks = ELEMENTS[::2][:20]
    for name, _, z in picks:
        out.append((1.0 + z / 40, _fact(f"Which chemical element has atomic number {z}? Reply "
                                        "with the element name only.", name.capitalize())))  # fmt: skip
    return out


def _fact(prompt: str, answer: str) -> dict:
    return {"category": "fact_lookup", "prompt": prompt, "answer": answer, "format": "short",
            "regex": rf"(?i)(?<!\w){re.escape(answer)}(?!\w)"}  # fmt: skip


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _schema(props: dict[str, dict]) -> dict:
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}  # fmt: skip


PERSON = _schema({"name": {"type": "string", "minLength": 1},
                  "age": {"type": "integer", "minimum": 0, "maximum": 130},
                  "city": {"type": "string", "minLength": 1}})  # fmt: skip
ORDER = _schema({"product": {"type": "string", "minLength": 1},
                 "quantity": {"type": "integer", "minimum": 1},
                 "unit_price": {"type": "number", "minimum": 0}})  # fmt: skip
EVENT = _schema({"event": {"type": "string", "minLength": 1},
                 "month": {"type": "string", "enum": MONTHS},
                 "day": {"type": "integer", "minimum": 1, "maximum": 31}})  # fmt: skip

_JSON_ONLY = "Reply with the JSON object only."


def json_extraction(d: Draws) -> list[tuple[float, dict]]:
    out = []
    seen: set[str] = set()
    cities = [c for _, c in CAPITALS if " " not in c]
    while len(out) < PER_CATEGORY:
        kind = len(out) % 3
        style = len(out) // 3 % 4  # 0 plain ... 3 with distractors
        if kind == 0:
            name = f"{d.choice(FIRST)} {d.choice(LAST)}"
            age, city = d.between(18, 90), d.choice(cities)
            other = d.choice([c for c in cities if c != city])
            text = [f"{name} is {age} years old and lives in {city}.",
                    f"{name}, aged {age}, moved to {city} last spring.",
                    f"Our new colleague {name} ({age}) works from the {city} office.",
                    f"After {age - 10} years in {other}, {name}, now {age}, settled in {city}."][style]  # fmt: skip
            obj, schema = {"name": name, "age": age, "city": city}, PERSON
            ask = ('the person\'s details as a JSON object with keys "name" (string), "age" '
                   '(integer) and "city" (string, where they live now)')  # fmt: skip
        elif kind == 1:
            product, qty = d.choice(PRODUCTS), d.between(1, 24)
            price = Decimal(d.between(199, 19999)) / 100
            text = [f"Order: {qty} x {product} at {price} dollars each.",
                    f"Please send {qty} units of the {product}; the unit price is {price} dollars.",
                    f"We need {qty} of the {product} (each {price} dollars) by Friday.",
                    f"Last month we bought 3 chairs; this time it is {qty} x {product}, "
                    f"{price} dollars apiece, shipping extra."][style]  # fmt: skip
            obj, schema = {"product": product, "quantity": qty, "unit_price": float(price)}, ORDER
            ask = ('the order as a JSON object with keys "product" (string), "quantity" '
                   '(integer) and "unit_price" (number, in dollars)')  # fmt: skip
        else:
            event, month, day = d.choice(EVENTS), d.choice(MONTHS), d.between(1, 28)
            other = d.choice([m for m in MONTHS if m != month])
            text = [f"The {event} takes place on {month} {day}.",
                    f"Save the date: {month} {day} is the {event}.",
                    f"This year the {event} will be held on the {_ordinal(day)} of {month}.",
                    f"Moved from {other} 3 because of the weather, the {event} is now on "
                    f"{month} {day}."][style]  # fmt: skip
            obj, schema = {"event": event, "month": month, "day": day}, EVENT
            ask = ('the event as a JSON object with keys "event" (string), "month" (month '
                   'name) and "day" (integer, day of the month)')  # fmt: skip
        prompt = f"Extract {ask} from this text. {_JSON_ONLY} Text: {text}"
        if prompt in seen:
            continue
        seen.add(prompt)
        hard = style + 0.25 * kind
        fields = {"category": "json_extraction", "prompt": prompt, "answer": json.dumps(obj),
                  "format": "json", "schema": schema, "max_tokens": 64}  # fmt: skip
        if kind == 0:  # a person's name, age and home: personal data a router keeps in-house
            fields["tags"] = ["pii"]
        out.append((hard, fields))
    return out


MAKERS = {
    "arithmetic": arithmetic,
    "primality": primality,
    "unit_conversion": unit_conversion,
    "fact_lookup": fact_lookup,
    "json_extraction": json_extraction,
}
ID_PREFIX = {"arithmetic": "arith", "primality": "prime", "unit_conversion": "unit",
             "fact_lookup": "fact", "json_extraction": "json"}  # fmt: skip


def build() -> list[dict]:
    """All items, category by category, each with id and difficulty."""
    items = []
    for category, make in MAKERS.items():
        d = Draws(category)
        made = make(d)
        if len(made) != PER_CATEGORY:
            raise AssertionError(f"{category}: {len(made)} items, expected {PER_CATEGORY}")
        ties = [d.below(1 << 30) for _ in made]
        order = sorted(range(len(made)), key=lambda i: (made[i][0], ties[i]))
        difficulty = {i: (rank + 0.5) / len(made) for rank, i in enumerate(order)}
        for k, (_, fields) in enumerate(made):
            item = {"id": f"canary-{ID_PREFIX[category]}-{k + 1:03d}", **fields}
            item["difficulty"] = round(difficulty[k], 4)
            items.append(item)
    return items


def render(items: list[dict]) -> str:
    return "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    ap.add_argument("-o", "--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines())} items to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
