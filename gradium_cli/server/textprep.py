"""Turn the text a client sent into what the speech engine (eSpeak NG) should say.

The server reports word timestamps against the *original* words (PROTOCOL.md §2.4
`text` messages), but the engine must hear normalised text: rewrite rules (§6) and
pronunciation dictionaries (§7) change what is said, and `<break time=.../>` tags
become silence (§5). `prepare()` therefore returns a list of pieces, each pairing
the original token(s) with what to say for them, so the engine can synthesise piece
by piece and attribute audio back to the client's words.

Safety contract of `prepare()` for callers that hand `SpokenWord.spoken` to eSpeak:

* `spoken` never contains control characters, lone surrogates, `<` or `>`.
* `spoken` never contains `[` or `]` except inside well-formed `[[...]]` phoneme
  blocks produced by a dictionary rewrite: eSpeak switches to phoneme input at `[[`,
  so a stray `[[` in user text would swallow the rest of the sentence.
* `spoken` may be the empty string (a token that was only markup or only control
  characters). The original is still reported so timestamps stay aligned; the caller
  should emit it with zero duration rather than drop it.
* `&` and other ordinary punctuation pass through untouched; a caller that enables
  eSpeak's SSML mode must escape them itself.

Standard library only, so it can be tested and reused without the engine or the
web stack installed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

__all__ = [
    "ALIASES",
    "BREAK_MAX_SECONDS",
    "BREAK_MIN_SECONDS",
    "FLUSH_TAG",
    "RULE_NAMES",
    "DictionaryRule",
    "Pause",
    "Piece",
    "SpokenWord",
    "expand_rewrite_rules",
    "join_messages",
    "phrase_lengths",
    "prepare",
    "rewrite_word",
    "sanitize_spoken",
    "validate_dictionary_rewrite",
    "validate_dictionary_word",
]

FLUSH_TAG = "<flush>"

BREAK_MIN_SECONDS = 0.1
BREAK_MAX_SECONDS = 2.0


@dataclass(frozen=True)
class DictionaryRule:
    original: str
    """A word or multi-word phrase, matched whole-word against the client's tokens."""
    rewrite: str
    """A respelling ("gray dee um") or eSpeak phonemes wrapped in [[...]]."""
    case_sensitive: bool = False


@dataclass(frozen=True)
class SpokenWord:
    original: str
    """The client's token(s) exactly as sent, punctuation attached; a phrase matched
    by a dictionary rule spans several tokens joined by single spaces."""
    spoken: str
    """What the engine should say for it: several words, a [[phoneme]] block, or ""."""


@dataclass(frozen=True)
class Pause:
    seconds: float
    """Always within BREAK_MIN_SECONDS..BREAK_MAX_SECONDS."""


Piece: TypeAlias = SpokenWord | Pause


# --------------------------------------------------------------------------- messages


def join_messages(parts: list[str]) -> str:
    """Join consecutive `text` messages the way the service does (PROTOCOL.md §5).

    One whitespace goes between messages, so `"hel"` + `"lo"` is `"hel lo"`, and
    runs of whitespace then collapse because clients such as LiveKit send `"word "`.
    """
    return " ".join(" ".join(parts).split())


# ----------------------------------------------------------------------- sanitising

_DROPPED_CATEGORIES = frozenset({"Cc", "Cs"})
# Single-word tags such as <flush> or <b> glued to a word: speaking "flush" or "b"
# would be worse than saying nothing. Tags with attributes span several tokens and
# are left to the bracket replacement below, so "a<b and c>d" keeps its words.
_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9:._-]*\s*/?>")
_UNSAFE_CHARS = str.maketrans({"<": " ", ">": " ", "[": " ", "]": " "})


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in _DROPPED_CATEGORIES for c in text)


def _drop_controls(text: str) -> str:
    if not _has_control(text):
        return text
    return "".join(c for c in text if unicodedata.category(c) not in _DROPPED_CATEGORIES)


def _sanitize_fragment(text: str) -> str:
    """Like sanitize_spoken, but keeps a single edge space so fragments can be glued."""
    text = _TAG_RE.sub(" ", _drop_controls(text)).translate(_UNSAFE_CHARS)
    return re.sub(r"\s+", " ", text)


def sanitize_spoken(text: str) -> str:
    """Make user-derived text safe to hand to eSpeak (see the module docstring).

    Brackets and angle brackets become spaces rather than vanishing so that
    `foo[1]` is still said as two words.
    """
    return " ".join(_sanitize_fragment(text).split())


_PHONEME_BLOCK_RE = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


def _sanitize_rewrite(rewrite: str) -> str:
    """Sanitise a dictionary rewrite, keeping its well-formed [[...]] phoneme blocks.

    An unterminated `[[` is treated like any other stray bracket, because eSpeak would
    read everything after it, including later words, as phonemes.
    """
    out: list[str] = []
    pos = 0
    for match in _PHONEME_BLOCK_RE.finditer(rewrite):
        out.append(_sanitize_fragment(rewrite[pos : match.start()]))
        inner = " ".join(_sanitize_fragment(match.group(1)).split())
        if inner:
            out.append(f"[[{inner}]]")
        pos = match.end()
    out.append(_sanitize_fragment(rewrite[pos:]))
    return " ".join("".join(out).split())


def validate_dictionary_word(original: str, max_words: int) -> None:
    """Reject dictionary originals that could never match a token, or cost too much to match.

    Raises ValueError for empty or whitespace-only words, for control characters
    (including tabs and newlines: tokens never contain them, so such a rule is dead)
    and for phrases of more than `max_words` words: matching tries every phrase length
    at every word, so phrases of up to 899 words made an 800-word request render for 25 s.
    """
    if not original.strip():
        raise ValueError("dictionary word must not be empty")
    if _has_control(original):
        raise ValueError(f"dictionary word {original!r} contains control characters")
    words = len(original.split())
    if words > max_words:
        raise ValueError(f"a dictionary phrase has at most {max_words} words, not {words}")


def validate_dictionary_rewrite(rewrite: str) -> None:
    """Reject rewrites that `prepare()` would have to mangle.

    Raises ValueError for control characters and for `[[`/`]]` that do not form
    balanced, non-nested phoneme blocks. An empty rewrite is allowed (it silences
    the word).
    """
    if _has_control(rewrite):
        raise ValueError(f"dictionary rewrite {rewrite!r} contains control characters")
    outside = _PHONEME_BLOCK_RE.sub(" ", rewrite)
    if "[[" in outside or "]]" in outside:
        raise ValueError(f"dictionary rewrite {rewrite!r} has an unbalanced [[ or ]]")
    if any("[[" in m.group(1) for m in _PHONEME_BLOCK_RE.finditer(rewrite)):
        raise ValueError(f"dictionary rewrite {rewrite!r} nests [[ phoneme blocks")


# -------------------------------------------------------------------------- affixes

# Trailing punctuation is kept after a rewrite (PROTOCOL.md §6). Opening and closing
# quotes and brackets are peeled off too, because "(Gradium)" should still match a
# dictionary rule for "Gradium" and "(12:30)" is still a time.
_LEADING = "\"'(«“‘„¿¡"
_TRAILING = ".,!?;:\"')»”’…"


def _split_affixes(token: str) -> tuple[str, str, str]:
    """Split a token into (leading punctuation, core, trailing punctuation)."""
    core = token.rstrip(_TRAILING)
    suffix = token[len(core) :]
    stripped = core.lstrip(_LEADING)
    return core[: len(core) - len(stripped)], stripped, suffix


# --------------------------------------------------------------------- localisation


@dataclass(frozen=True)
class _Lang:
    code: str
    at: str
    dot: str
    dash: str
    underscore: str
    plus: str
    colon: str
    slash: str
    minus: str
    group_sep: str
    """Thousands separator accepted inside numbers ("1,234" in English)."""
    scales: tuple[tuple[int, Callable[[int], str]], ...]
    """(value, name-for-count) from the largest scale down."""

    @property
    def symbols(self) -> dict[str, str]:
        return {
            "@": self.at,
            ".": self.dot,
            "-": self.dash,
            "_": self.underscore,
            "+": self.plus,
            ":": self.colon,
            "/": self.slash,
        }


def _plural(one: str, many: str, article: str | None = None) -> Callable[[int], str]:
    """Scale word with a count: "2 millions", and "un million" when `article` is set."""

    def name(count: int) -> str:
        if count == 1:
            return f"{article} {one}" if article is not None else f"1 {one}"
        return f"{count} {many}"

    return name


def _bare_one(word: str) -> Callable[[int], str]:
    """Thousands in fr/de/es/pt are said without "one": "mille 234", "2 mille 234"."""
    return lambda count: word if count == 1 else f"{count} {word}"


def _spanish_millions(count: int) -> str:
    # Spanish has no word for 10^9 in everyday use: 2 500 000 000 is
    # "2 mil 500 millones", so the millions count itself may contain "mil".
    if count == 1:
        return "un millón"
    return f"{_expand_scales(count, _ES_THOUSANDS)} millones"


_ES_THOUSANDS: tuple[tuple[int, Callable[[int], str]], ...] = ((10**3, _bare_one("mil")),)

_LANGS: dict[str, _Lang] = {
    "en": _Lang(
        code="en",
        at="at",
        dot="dot",
        dash="dash",
        underscore="underscore",
        plus="plus",
        colon="colon",
        slash="slash",
        minus="minus",
        group_sep=",",
        scales=(
            (10**12, _plural("trillion", "trillion")),
            (10**9, _plural("billion", "billion")),
            (10**6, _plural("million", "million")),
            (10**3, _plural("thousand", "thousand")),
        ),
    ),
    "fr": _Lang(
        code="fr",
        at="arobaze",
        dot="point",
        dash="tiret",
        underscore="tiret bas",
        plus="plus",
        colon="deux-points",
        slash="slash",
        minus="moins",
        group_sep=".",
        scales=(
            (10**12, _plural("billion", "billions", "un")),
            (10**9, _plural("milliard", "milliards", "un")),
            (10**6, _plural("million", "millions", "un")),
            (10**3, _bare_one("mille")),
        ),
    ),
    "de": _Lang(
        code="de",
        at="at",
        dot="Punkt",
        dash="Bindestrich",
        underscore="Unterstrich",
        plus="plus",
        colon="Doppelpunkt",
        slash="Slash",
        minus="minus",
        group_sep=".",
        scales=(
            (10**12, _plural("Billion", "Billionen", "eine")),
            (10**9, _plural("Milliarde", "Milliarden", "eine")),
            (10**6, _plural("Million", "Millionen", "eine")),
            (10**3, _bare_one("Tausend")),
        ),
    ),
    "es": _Lang(
        code="es",
        at="arroba",
        dot="punto",
        dash="guión",
        underscore="guion bajo",
        plus="más",
        colon="dos puntos",
        slash="barra",
        minus="menos",
        group_sep=".",
        scales=(
            (10**12, _plural("billón", "billones", "un")),
            (10**6, _spanish_millions),
            (10**3, _bare_one("mil")),
        ),
    ),
    "pt": _Lang(
        code="pt",
        at="arroba",
        dot="ponto",
        dash="hífen",
        underscore="sublinhado",
        plus="mais",
        colon="dois pontos",
        slash="barra",
        minus="menos",
        group_sep=".",
        scales=(
            (10**12, _plural("trilhão", "trilhões", "um")),
            (10**9, _plural("bilhão", "bilhões", "um")),
            (10**6, _plural("milhão", "milhões", "um")),
            (10**3, _bare_one("mil")),
        ),
    ),
}


def _spell(letters: str) -> str:
    return "-".join(letters.upper())


# ---------------------------------------------------------------------------- rules
#
# Each rule takes the core of a token (affixes already peeled off) and returns its
# rewrite, or None when it does not apply. Digit classes are ASCII-only so that
# int() never sees other scripts' digits, and lengths are bounded so it never sees
# more digits than Python will convert.

_DATE_RE = re.compile(r"([0-9]{1,2})/([0-9]{1,2})(?:/([0-9]{2}|[0-9]{4}))?")
_DOTTED_DATE_RE = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})")


def _rule_date(core: str) -> str | None:
    """Date: `12/31/2020` -> `12-31 2020`, `1/5` -> `1-5`.

    Also accepts `31.12.2020` (a four-digit year is required with dots, so times such
    as `12.30` are left to the time rules). Day and month must both be 1-31 and at
    least one of them at most 12; nothing else is checked.
    """
    match = _DATE_RE.fullmatch(core) or _DOTTED_DATE_RE.fullmatch(core)
    if match is None:
        return None
    first, second, year = match.groups()
    a, b = int(first), int(second)
    if not (1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12):
        return None
    return f"{first}-{second}" + (f" {year}" if year else "")


_TIME_RE = re.compile(r"([0-9]{1,2})[:.]([0-9]{2})((?:[AaPp]\.?[Mm]\.?)?)")
_TIME_FR_RE = re.compile(r"([0-9]{1,2})[:hH]([0-9]{2})")


def _valid_time(hour: str, minute: str) -> bool:
    return int(hour) <= 24 and int(minute) <= 59


def _rule_time_en(core: str) -> str | None:
    """TimeEn: `12:30` -> `12.30`, `3:45PM` -> `3.45PM` (dots are left as they are)."""
    match = _TIME_RE.fullmatch(core)
    if match is None or not _valid_time(match[1], match[2]):
        return None
    return f"{match[1]}.{match[2]}{match[3]}"


def _rule_time_fr(core: str) -> str | None:
    """TimeFr: `14:00` -> `14h00`; `9h15` is already the French form."""
    match = _TIME_FR_RE.fullmatch(core)
    if match is None or not _valid_time(match[1], match[2]):
        return None
    return f"{match[1]}h{match[2]}"


def _rule_time_de(core: str) -> str | None:
    """TimeDe: `14:00` and `14.00` -> `14 Uhr 00`.

    Deliberate deviation: Gradium's own docs show `8:20.` -> `8.20.`, which suits
    their model, but eSpeak reads `8.20.` as an ordinal or a decimal. The rewrite is
    never visible to clients (timestamps carry the original word), only audible.
    """
    match = _TIME_RE.fullmatch(core)
    if match is None or match[3] or not _valid_time(match[1], match[2]):
        return None
    return f"{match[1]} Uhr {match[2]}"


def _expand_scales(value: int, scales: Iterable[tuple[int, Callable[[int], str]]]) -> str:
    parts: list[str] = []
    for size, name in scales:
        count, value = divmod(value, size)
        if count:
            parts.append(name(count))
    if value:
        parts.append(str(value))
    return " ".join(parts)


def _number_rule(lang: _Lang) -> Callable[[str], str | None]:
    sep = re.escape(lang.group_sep)
    pattern = re.compile(rf"(-?)((?:0|[1-9][0-9]{{0,14}})|[1-9][0-9]{{0,2}}(?:{sep}[0-9]{{3}}){{1,4}})")

    def rule(core: str) -> str | None:
        """Number: `1234` -> `1 thousand 234`, `-4500` -> `minus 4 thousand 500`.

        Integers of up to 15 digits only, with or without the language's thousands
        separator. Leading zeros are not numbers (`0123` is a code or a phone
        number); |n| < 1000 and plain years 1900-2100 are kept as they are.
        """
        match = pattern.fullmatch(core)
        if match is None:
            return None
        digits = match[2].replace(lang.group_sep, "")
        value = int(digits)
        is_year = not match[1] and digits == match[2] and 1900 <= value <= 2100
        if value < 1000 or is_year:
            return core
        words = _expand_scales(value, lang.scales)
        return f"{lang.minus} {words}" if match[1] else words

    return rule


_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_EMAIL_RE = re.compile(rf"([A-Za-z0-9._%+-]{{1,64}})@({_HOST})")
_URL_RE = re.compile(
    rf"(?:([A-Za-z][A-Za-z0-9+.-]*)://)?({_HOST})(?::([0-9]{{1,5}}))?"
    r"([/?#][A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]*)?"
)
# Without a scheme, "end.Next" or "Mr.Smith" must not read as web addresses.
_KNOWN_TLDS = frozenset({"com", "org", "net", "edu", "gov", "info", "biz", "io", "ai", "app", "dev"})
_PIECES_RE = re.compile(r"[A-Za-z0-9]+|.", re.DOTALL)


def _speak_symbols(text: str, lang: _Lang) -> list[str]:
    symbols = lang.symbols
    return [symbols.get(piece, piece) for piece in _PIECES_RE.findall(text)]


def _speak_host(host: str, lang: _Lang) -> str:
    # Two-letter labels are spelled ("co.uk" -> "C-O dot U-K", "it-management" ->
    # "I-T dash management") because eSpeak would read them as words.
    words = []
    for piece in _PIECES_RE.findall(host):
        if len(piece) == 2 and piece.isalpha():
            words.append(_spell(piece))
        else:
            words.append(lang.symbols.get(piece, piece))
    return " ".join(words)


def _tld_ok(host: str) -> bool:
    tld = host.rsplit(".", 1)[-1]
    return "." in host and tld.isalpha() and (len(tld) == 2 or tld.lower() in _KNOWN_TLDS)


def _email_rule(lang: _Lang) -> Callable[[str], str | None]:
    def rule(core: str) -> str | None:
        """Email: `foo.bar@gmail.com` -> `foo dot bar at gmail dot com`.

        Two-letter domain labels are spelled as in URLs (`bar.fr` -> `bar dot F-R`).
        """
        match = _EMAIL_RE.fullmatch(core)
        if match is None or not _tld_ok(match[2]):
            return None
        local = " ".join(_speak_symbols(match[1], lang))
        return f"{local} {lang.at} {_speak_host(match[2], lang)}"

    return rule


def _url_rule(lang: _Lang) -> Callable[[str], str | None]:
    def rule(core: str) -> str | None:
        """Url: `https://www.example.com/path` ->
        `H-T-T-P-S colon slash slash www dot example dot com slash path`.

        Without a scheme the token must start with `www.` or end its host in a known
        generic TLD or any two-letter one, so ordinary words joined by a dot stay
        words. Two-letter host labels are spelled out.
        """
        match = _URL_RE.fullmatch(core)
        if match is None:
            return None
        scheme, host, port, rest = match.groups()
        if scheme is None and not (host.lower().startswith("www.") or _tld_ok(host)):
            return None
        words: list[str] = []
        if scheme is not None:
            words += [_spell(scheme), lang.colon, lang.slash, lang.slash]
        words.append(_speak_host(host, lang))
        if port is not None:
            words += [lang.colon, port]
        if rest:
            words += _speak_symbols(rest, lang)
        return " ".join(words)

    return rule


_PHONE_RE = re.compile(r"(\+|0)[0-9()\-]{5,24}")
_COUNTRY_CODES = ("1", "33", "34", "44", "49", "351")


def _pairs_from_right(digits: str) -> list[str]:
    head = len(digits) % 2
    return ([digits[:head]] if head else []) + [digits[i : i + 2] for i in range(head, len(digits), 2)]


def _sized(digits: str, sizes: Sequence[int]) -> list[str]:
    out, pos = [], 0
    for size in sizes:
        out.append(digits[pos : pos + size])
        pos += size
    return out


def _threes(digits: str) -> list[str]:
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups[-2:] = [groups[-2] + groups[-1]]
    return groups


def _group_national(country: str | None, digits: str, lang: _Lang) -> list[str]:
    """Split a national number into the groups people say it in."""
    if lang.code == "fr":
        return _pairs_from_right(digits)
    if country == "1" and len(digits) == 10:
        return _sized(digits, (3, 3, 4))
    if country == "44" and len(digits) == 10:
        return _sized(digits, (2, 4, 4) if digits.startswith("2") else (3, 3, 4))
    if country == "33":
        return _pairs_from_right(digits)
    if country in ("34", "351") and len(digits) == 9:
        return _sized(digits, (3, 3, 3))
    if country == "49" or (country is None and lang.code == "de"):
        head = 3 if digits.startswith("0") else 2
        return [digits[:head], *_pairs_from_right(digits[head:])]
    if country is None and lang.code == "en" and len(digits) == 11:
        return _sized(digits, (4, 3, 4))
    return _threes(digits)


def _phone_rule(lang: _Lang) -> Callable[[str], str | None]:
    def rule(core: str) -> str | None:
        """Phone: `+16502349653` -> `+1 6-5-0 2-3-4 9-6-5-3`.

        International numbers need a supported country code (+1, +33, +34, +44, +49,
        +351; others are left alone, as the split between code and number is
        unknowable) and at least 6 digits; local numbers start with 0 and have 6-15
        digits. Groups follow the country (+1: 3-3-4; +44: 3-3-4, London 2-4-4; +33:
        pairs; +34/+351: 3-3-3; +49: area then pairs), or the language for local
        numbers. French reads each group as a number (`01 23 45 67 89`); the other
        languages read digit by digit (`0-1 2-3`). Hyphens and parentheses in the
        token are ignored.
        """
        match = _PHONE_RE.fullmatch(core)
        if match is None:
            return None
        digits = re.sub(r"[()\-]", "", core.lstrip("+"))
        if not 6 <= len(digits) <= 15:
            return None
        country: str | None = None
        if match[1] == "+":
            country = next((c for c in _COUNTRY_CODES if digits.startswith(c)), None)
            if country is None or len(digits) == len(country):
                return None
            digits = digits[len(country) :]
        groups = _group_national(country, digits, lang)
        spoken = " ".join(g if lang.code == "fr" else "-".join(g) for g in groups)
        return f"+{country} {spoken}" if country else spoken

    return rule


_ALNUM_RE = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*")
_ALNUM_RUN_RE = re.compile(r"[A-Z]+|[0-9]+")


def _rule_alnum(core: str) -> str | None:
    """AlNum: `AB12CD34` -> `A-B 1-2 C-D 3-4` (uppercase letters mixed with digits).

    Both letters and digits are required, so acronyms and plain numbers are left to
    eSpeak and the number rules. Hyphens between groups (`AB-123-CD`) are ignored.
    """
    if _ALNUM_RE.fullmatch(core) is None:
        return None
    runs = _ALNUM_RUN_RE.findall(core)
    if not any(r.isdigit() for r in runs) or all(r.isdigit() for r in runs):
        return None
    return " ".join("-".join(run) for run in runs)


def _build_rules() -> dict[str, Callable[[str], str | None]]:
    rules: dict[str, Callable[[str], str | None]] = {
        "Date": _rule_date,
        "AlNum": _rule_alnum,
        "TimeEn": _rule_time_en,
        "TimeFr": _rule_time_fr,
        "TimeDe": _rule_time_de,
    }
    for code, lang in _LANGS.items():
        suffix = code.capitalize()
        rules[f"Number{suffix}"] = _number_rule(lang)
        rules[f"Email{suffix}"] = _email_rule(lang)
        rules[f"Url{suffix}"] = _url_rule(lang)
        rules[f"Phone{suffix}"] = _phone_rule(lang)
    return rules


_RULES = _build_rules()
RULE_NAMES: tuple[str, ...] = tuple(_RULES)

ALIASES: dict[str, tuple[str, ...]] = {
    "en": ("TimeEn", "Date", "AlNum", "NumberEn", "EmailEn", "UrlEn", "PhoneEn"),
    "fr": ("TimeFr", "Date", "AlNum", "NumberFr", "EmailFr", "UrlFr", "PhoneFr"),
    "de": ("TimeDe", "Date", "AlNum", "NumberDe", "EmailDe", "UrlDe", "PhoneDe"),
    "es": ("Date", "AlNum", "NumberEs", "EmailEs", "UrlEs", "PhoneEs"),
    "pt": ("Date", "AlNum", "NumberPt", "EmailPt", "UrlPt", "PhonePt"),
}

# Clients type rule names by hand in json_config; "timeen" or "EN" is not worth an error.
_CANONICAL = {name.lower(): name for name in RULE_NAMES}


def expand_rewrite_rules(spec: str) -> list[str]:
    """Expand a `rewrite_rules` value (comma list of rule names and/or aliases).

    Names and aliases are matched case-insensitively, blanks around commas and empty
    items are ignored, duplicates are dropped keeping the first occurrence. Raises
    ValueError naming the unknown item and the valid choices.
    """
    out: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key = item.lower()
        if key in ALIASES:
            names: Sequence[str] = ALIASES[key]
        elif key in _CANONICAL:
            names = (_CANONICAL[key],)
        else:
            raise ValueError(
                f"unknown rewrite rule {item!r}; valid rules: {', '.join(RULE_NAMES)}; aliases: {', '.join(ALIASES)}"
            )
        out.extend(name for name in names if name not in out)
    return out


@lru_cache(maxsize=64)
def _resolve(rules: tuple[str, ...]) -> tuple[Callable[[str], str | None], ...]:
    return tuple(_RULES[name] for name in expand_rewrite_rules(",".join(rules)))


def _apply_rules(core: str, rules: Sequence[str]) -> str | None:
    if not core:
        return None
    for rule in _resolve(tuple(rules)):
        result = rule(core)
        if result is not None:
            return result
    return None


def rewrite_word(word: str, rules: list[str]) -> str:
    """Apply the first matching rewrite rule, in `rules` order, to one token.

    Leading quotes/brackets and trailing punctuation are peeled off before matching
    and put back around the rewrite (`14:00?` -> `14h00?`). `rules` may hold rule
    names or aliases; unknown ones raise ValueError. The result is not sanitised:
    `prepare()` does that.
    """
    prefix, core, suffix = _split_affixes(word)
    result = _apply_rules(core, rules)
    return word if result is None else f"{prefix}{result}{suffix}"


# ----------------------------------------------------------------------- dictionary


class _DictionaryMatcher:
    """Whole-word, whole-phrase lookup of dictionary rules over a token list."""

    def __init__(self, rules: Iterable[DictionaryRule]) -> None:
        self._exact: dict[tuple[str, ...], DictionaryRule] = {}
        self._folded: dict[tuple[str, ...], DictionaryRule] = {}
        lengths: set[int] = set()
        for rule in rules:
            words = tuple(rule.original.split())
            if not words:
                continue
            lengths.add(len(words))
            if rule.case_sensitive:
                self._exact.setdefault(words, rule)
            else:
                self._folded.setdefault(tuple(w.casefold() for w in words), rule)
        self._lengths = sorted(lengths, reverse=True)

    def match(self, tokens: Sequence[str], start: int) -> tuple[int, str] | None:
        """Return (tokens consumed, spoken form) for the longest rule matching at start.

        For the same candidate words a case-sensitive rule beats a case-insensitive
        one, and an earlier rule beats a later one.
        """
        for length in self._lengths:
            window = list(tokens[start : start + length])
            if len(window) < length:
                continue
            for prefix, words, suffix in self._variants(window):
                rule = self._exact.get(tuple(words)) or self._folded.get(tuple(w.casefold() for w in words))
                if rule is not None:
                    spoken = _sanitize_fragment(prefix) + _sanitize_rewrite(rule.rewrite) + _sanitize_fragment(suffix)
                    return length, " ".join(spoken.split())
        return None

    @staticmethod
    def _variants(window: list[str]) -> Iterable[tuple[str, list[str], str]]:
        """Yield (prefix, words, suffix) candidates for a window of tokens.

        Raw tokens come first, so a rule for "Dr." wins over one for "Dr" on "Dr.";
        then trailing punctuation is peeled off the last token, then leading quotes
        and brackets off the first.
        """
        last = window[-1]
        last_core = last.rstrip(_TRAILING)
        endings = [("", last)]
        if last_core and last_core != last:
            endings.append((last[len(last_core) :], last_core))
        for suffix, last_word in endings:
            yield "", [*window[:-1], last_word], suffix
        for suffix, last_word in endings:
            words = [*window[:-1], last_word]
            head = words[0].lstrip(_LEADING)
            if head and head != words[0]:
                yield words[0][: len(words[0]) - len(head)], [head, *words[1:]], suffix


def phrase_lengths(rules: Iterable[DictionaryRule]) -> tuple[int, Callable[[Sequence[str], int], int]]:
    """(the longest phrase in words, how many tokens the phrase matched at a position spans).

    The text buffer uses it to never end a unit inside a dictionary phrase.
    """
    matcher = _DictionaryMatcher(rules)
    longest = max(matcher._lengths, default=1)

    def span(tokens: Sequence[str], start: int) -> int:
        found = matcher.match(tokens, start)
        return found[0] if found is not None else 0

    return longest, span


# -------------------------------------------------------------------------- prepare

_BREAK_RE = re.compile(
    r"""<break\s+time\s*=\s*(["']?)\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s)?\s*\1\s*/?\s*>""",
    re.IGNORECASE,
)
_LOOSE_BREAK_RE = re.compile(r"<break\b[^<>]*>", re.IGNORECASE)
# A break tag has at most a handful of whitespace-separated parts; looking further
# would let one unterminated "<break" swallow a whole paragraph.
_BREAK_MAX_TOKENS = 6


def _parse_break(tokens: Sequence[str], start: int) -> tuple[int, Piece | None] | None:
    """Recognise a `<break .../>` tag starting at tokens[start].

    Returns (tokens consumed, Pause) for a valid tag, (tokens consumed, None) for a
    tag-shaped `<break ...>` whose time cannot be read (it is silent markup), or
    None when the token is not the start of a closed break tag.
    """
    if not tokens[start].lower().startswith("<break"):
        return None
    end = min(len(tokens), start + _BREAK_MAX_TOKENS)
    for stop in range(start, end):
        if ">" not in tokens[stop]:
            continue
        tag = " ".join(tokens[start : stop + 1])
        match = _BREAK_RE.fullmatch(tag)
        if match is not None:
            value = float(match[2]) / (1000.0 if (match[3] or "s").lower() == "ms" else 1.0)
            # Out-of-range values are clamped, not rejected: a whole request failing
            # over a pause length would be worse than a slightly different pause.
            seconds = min(max(value, BREAK_MIN_SECONDS), BREAK_MAX_SECONDS)
            return stop + 1 - start, Pause(seconds)
        if _LOOSE_BREAK_RE.fullmatch(tag) is not None:
            return stop + 1 - start, None
        return None
    return None


def prepare(
    text: str,
    *,
    rewrite_rules: list[str] | None = None,
    dictionary: list[DictionaryRule] | None = None,
) -> list[Piece]:
    """Turn client text into pieces for the engine, keeping the original words.

    * Tokens are split on whitespace; `<flush>` tokens are dropped.
    * `<break time="1.5s" />` (also `500ms`, a unitless number meaning seconds,
      single or no quotes, with or without the space before `/>`, split over several
      tokens) becomes a Pause, clamped to 0.1-2.0 s. A `<break ...>` tag whose time
      cannot be read yields silent words (spoken "") for its tokens.
    * Dictionary rules apply first (longest phrase wins; see `_DictionaryMatcher`);
      phrases never span a pause. Affix punctuation stays attached to the spoken
      form. Rewrite rules (names or aliases) then apply to the remaining tokens.
    * Every spoken form is sanitised as described in the module docstring.

    Never raises for any `text`; raises ValueError for unknown rewrite rules.
    """
    rules = list(rewrite_rules or ())
    _resolve(tuple(rules))  # fail on unknown rule names even when the text is empty
    matcher = _DictionaryMatcher(dictionary or ())
    tokens = [token for token in text.split() if token != FLUSH_TAG]

    pieces: list[Piece] = []
    run: list[str] = []  # tokens since the last break: dictionary phrases stay inside one
    i = 0
    while i < len(tokens):
        parsed = _parse_break(tokens, i)
        if parsed is None:
            run.append(tokens[i])
            i += 1
            continue
        pieces.extend(_speak_run(run, rules, matcher))
        run = []
        consumed, pause = parsed
        if pause is None:
            pieces.extend(SpokenWord(token, "") for token in tokens[i : i + consumed])
        else:
            pieces.append(pause)
        i += consumed
    pieces.extend(_speak_run(run, rules, matcher))
    return pieces


def _speak_run(tokens: Sequence[str], rules: list[str], matcher: _DictionaryMatcher) -> Iterable[SpokenWord]:
    i = 0
    while i < len(tokens):
        found = matcher.match(tokens, i)
        if found is not None:
            consumed, spoken = found
            yield SpokenWord(" ".join(tokens[i : i + consumed]), spoken)
            i += consumed
            continue
        token = tokens[i]
        yield SpokenWord(token, sanitize_spoken(rewrite_word(token, rules)))
        i += 1
