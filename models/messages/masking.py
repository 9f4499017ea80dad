"""Personal data masked in text people wrote, before anyone else sees it: phone numbers
(Chinese mobiles, landlines with an area code, any run of 7 or more digits), identity
card numbers (18 characters) and e-mail addresses become ``***``.

Residents write their numbers in every form: next to Chinese characters or letters
(``电话13655556666``), with any separators (``138 - 0013 - 8000``, ``138,0013,8000``),
in full-width digits (``１３８…``) or Chinese numerals (``一三八…``, ``幺``, ``〇``), and
e-mail addresses with a full-width ``＠``. The text is first mapped character for
character to a plain form (full-width → ASCII, Chinese numerals → digits), so every
position still points at the same character of the original; the patterns run on
the plain form and the original is masked at the same places. Ticket numbers
(``20261123-0007``), dates and times are kept, as are short numbers (house numbers,
amounts with thousands separators).

Used wherever one person's free text is shown to others: the Open311 records, the
"me too" list of the intake and the timeline of a followed report."""
from __future__ import annotations

import re

MASK = "***"

_NUMERALS = {"〇": "0", "零": "0", "一": "1", "幺": "1", "二": "2", "三": "3", "四": "4",
             "五": "5", "六": "6", "七": "7", "八": "8", "九": "9",
             "壹": "1", "贰": "2", "叁": "3", "肆": "4", "伍": "5", "陆": "6", "柒": "7",
             "捌": "8", "玖": "9"}
# full-width ASCII (U+FF01…U+FF5E) → ASCII, the ideographic space → a space, numerals → digits
_PLAIN = {**{cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}, 0x3000: 0x20,
          **{ord(k): ord(v) for k, v in _NUMERALS.items()}}

_SEP = r"[\s\-‐‑‒–—―.,、/·()]"
# kept as they are: ticket numbers, dates (2026-11-23, 2026.11.23, 2026年11月23日) and times
_KEEP = (r"(?<!\d)\d{8}-\d{4}(?!\d)"
         r"|(?<!\d)(?:19|20)\d\d(?:[-./](?:0?[1-9]|1[0-2])[-./]|年(?:0?[1-9]|1[0-2])月)"
         r"(?:0?[1-9]|[12]\d|3[01])日?(?!\d)"
         r"|(?<!\d)(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?!\d)")
_EMAIL = r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:[.。][A-Za-z0-9\-]+)+"
# a run of digits, each separated from the next by at most three separators; an optional
# leading + or (, and a final X of an identity card
_RUN = rf"[+(]?\d(?:{_SEP}{{0,3}}\d)+(?:{_SEP}{{0,2}}[Xx](?![A-Za-z]))?"
_EMAILS = re.compile(_EMAIL)
# a lookahead first: the many positions that cannot start a number fail fast
_NUMBERS = re.compile(rf"(?=[0-9+(])(?:(?P<keep>{_KEEP})|(?P<run>{_RUN}))")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # 1,000,000: an amount
_MOBILE = re.compile(r"(?:86)?1[3-9]\d{9}")
_TO_PLAIN = re.compile("[\uff01-\uff5e\u3000" + "".join(_NUMERALS) + "]")
MIN_DIGITS = 7


def plain(text: str) -> str:
    """``text`` with full-width characters and Chinese numerals as ASCII, same length."""
    return _TO_PLAIN.sub(lambda m: chr(_PLAIN[ord(m.group())]), text)


def _personal(run: str) -> bool:
    digits = re.sub(r"\D", "", run)
    if len(digits) < MIN_DIGITS:
        return False
    # an amount (1,000,000) is kept, unless its digits are a mobile number
    return not _GROUPED.fullmatch(run.lstrip("+(")) or bool(_MOBILE.fullmatch(digits))


def mask(text: str | None) -> str | None:
    """``text`` with phone numbers, identity card numbers and e-mail addresses as ``***``."""
    if not text:
        return text
    flat = plain(text)
    spans = []
    if "@" in flat:
        spans = [match.span() for match in _EMAILS.finditer(flat)]
        for begin, end in spans:  # an address's digits are not looked at again
            flat = flat[:begin] + "\x00" * (end - begin) + flat[end:]
    for match in _NUMBERS.finditer(flat):
        if match.lastgroup == "keep" or not _personal(match.group()):
            continue
        begin = match.start() + (flat[match.start()] == "(")  # "(010)…": the bracket stays
        spans.append((begin, match.end()))
    out, last = [], 0
    for begin, end in sorted(spans):
        out.append(text[last:begin])
        out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out)
