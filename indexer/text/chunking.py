"""Split a Document into Passages: title, headings, boilerplate, broken lines, long paragraphs."""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable, Sequence

from indexer.text.documents import Document

# Lines up to this many words that are not sentences are headings (Title Case) or boilerplate.
SHORT_LINE_WORDS = 12
SMALL_WORDS = {"a", "an", "the", "and", "or", "but", "nor", "for", "of", "in", "on", "at", "to",
               "by", "with", "from", "as", "vs", "via", "into", "over", "per", "than", "is"}
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "ltd",
                 "co", "corp", "gen", "gov", "sen", "rep", "no", "fig", "al", "approx", "dept"}
CLOSERS = "\"'”’)]»"
# An interviewer's question, on a line of its own before the answer, is at most this many words.
QUESTION_WORDS = 30
# Page furniture a scraped article carries between its paragraphs: links to other articles, ads,
# sharing and sign-up prompts, copyright, bylines and datelines. A short line with one of these is
# never a heading (sentence-case headings are told from furniture by this, not by their case).
FURNITURE = re.compile(
    r"(?i)\b(?:read|reading|advertisement|advert|sponsored|subscribe|subscribers?|newsletters?|sign up|"
    r"log in|share|shares|follow us|related|recommended|trending|most popular|comments?|listen|watch|"
    r"click|cookies?|copyright|all rights reserved)\b|©|"
    r"^(?:(?:published|updated|posted)\b|(?:by|photo|image|credit|source)\b\s*:?\s*[A-Z])")
COPYRIGHT = re.compile(r"(?i)©|\bcopyright\b|\ball rights reserved\b")  # furniture even as a sentence
# Furniture whatever its punctuation: a wire story's credit line ("Reporting by ...; Editing by
# ..."), and the line that introduces the links under an article ("More:", "See also:").
CREDITS = re.compile(r"(?i)^(?:(?:additional )?reporting|writing|editing|compiled) by\b|"
                     r"^(?:more|see also|also see|further reading|more on this story)\s*:?$")
# A dateline: a date, a time, "14 hours ago", "Updated" (in any order, with separators), and
# hardly a word more ("November 19, 2019 / 12:21 AM / Updated 14 hours ago").
MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
         r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b\.?")  # a month's name, not "Marathon" or "Junior"
WEEKDAY = r"(?:mon|tues?|wed(?:nes)?|thu(?:rs?)?|fri|sat(?:ur)?|sun)(?:day)?\b"
DATE_PART = re.compile(rf"(?i)\b{MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\b|\b\d{{1,2}}(?:st|nd|rd|th)?\s+{MONTH}|"
                       r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[:.]\d{2}\s*(?:am|pm|a\.m\.|p\.m\.)?|"
                       r"\b\d+\s+(?:seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?)\s+ago\b|"
                       rf"\b(?:updated|published|posted|last modified)\b|\b{WEEKDAY},?")
SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]»]*(?=\s|$)")
WORD = re.compile(r"\S+")
# text -> (start, end) char offsets of the word pieces the model sees (the model's tokenizer).
TokenSpans = Callable[[str], Sequence[tuple[int, int]]]


@dataclass(frozen=True)
class Passage:
    """A searchable piece of a document; document.text[start:end] == text."""

    passage_id: str
    doc_id: str
    title: str
    source: str
    section: str
    paragraph: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Line:
    start: int
    end: int
    text: str
    after_blank: bool


def split_lines(text: str) -> list[Line]:
    """Non-blank lines with their stripped offsets and whether a blank line precedes them."""
    lines, offset, blank = [], 0, False
    for raw in text.split("\n"):
        stripped = raw.strip()
        if stripped:
            start = offset + (len(raw) - len(raw.lstrip()))
            lines.append(Line(start, start + len(stripped), stripped, blank or not lines))
            blank = False
        else:
            blank = True
        offset += len(raw) + 1
    return lines


def ends_sentence(text: str) -> bool:
    """True when the text ends like a finished sentence."""
    return text.rstrip().rstrip(CLOSERS).endswith((".", "!", "?", "…", ":"))


def is_short_fragment(text: str) -> bool:
    """A short line that is not a sentence: a heading or page boilerplate."""
    return len(text.split()) <= SHORT_LINE_WORDS and not ends_sentence(text)


def is_title_case(text: str) -> bool:
    """Every significant word starts with a capital (or digit), as headings do."""
    words = [w.strip(CLOSERS + "\"'“‘(") for w in text.split()]
    words = [w for w in words if w]
    significant = [w for i, w in enumerate(words) if i == 0 or w.lower() not in SMALL_WORDS]
    return bool(significant) and all(w[0].isupper() or w[0].isdigit() for w in significant)


def is_furniture(text: str) -> bool:
    """A short line of page furniture ("Also read", "Advertisement", "Published 3 May 2026",
    "© Example News. All rights reserved.", "Reporting by ...", "More:", a dateline)."""
    if len(text.split()) > SHORT_LINE_WORDS:
        return False
    return CREDITS.search(text) is not None or is_dateline(text) or (
        (COPYRIGHT.search(text) is not None or not ends_sentence(text)) and FURNITURE.search(text) is not None)


def is_dateline(text: str) -> bool:
    """A line that is a date and time and little else: two parts of one and at most two words
    besides ("AM", "GMT", "on"), or a date alone; "Since March 3" and "Monday" are headings."""
    parts = len(DATE_PART.findall(text))
    words = len([w for w in DATE_PART.sub(" ", text).split() if re.search(r"[^\W\d_]", w)])
    return (parts >= 2 and words <= 2) or (parts == 1 and words == 0 and any(c.isdigit() for c in text))


def is_heading(line: Line, following: Line | None) -> bool:
    """Markdown headings, or short lines that are not sentences nor page furniture, in Title Case
    or followed by a paragraph (following: the next line that is not furniture)."""
    if line.text.startswith("#"):
        return True
    if not is_short_fragment(line.text) or is_furniture(line.text):
        return False
    return is_title_case(line.text) or (following is not None and not is_short_fragment(following.text))


def is_question(text: str) -> bool:
    return text.rstrip().rstrip(CLOSERS).endswith("?")


def interview_questions(lines: list[Line], block_mode: bool) -> set[int]:
    """The lines that are an interviewer's questions (a Q&A, an explainer's "What happens next?"):
    a question of a few words standing alone, followed by a paragraph that is not one. They
    head the answer below them, as a section heading does, so the answer is found by the
    question's words and meaning; a single such line in an article is just a sentence."""
    found = set()
    for index in range(1, len(lines) - 1):  # the first line is the title or the standfirst
        line, answer = lines[index], lines[index + 1]
        alone = (line.after_blank and answer.after_blank) if block_mode else ends_sentence(lines[index - 1].text)
        if (alone and is_question(line.text) and len(line.text.split()) <= QUESTION_WORDS
                and not is_question(answer.text) and not is_short_fragment(answer.text)):
            found.add(index)
    return found if len(found) >= 2 else set()


def continues(previous: Line, line: Line, block_mode: bool) -> bool:
    """Whether line is the rest of the paragraph that previous started."""
    if line.after_blank or line.text.startswith("#"):
        return False
    if block_mode:
        return True
    if ends_sentence(previous.text):
        return False
    return line.text[0].islower() or not is_short_fragment(line.text)


def broken_before(lines: list[Line], index: int) -> bool:
    """The line stops mid-sentence and the next line carries on in lower case."""
    line = lines[index]
    following = lines[index + 1] if index + 1 < len(lines) else None
    return (following is not None and not following.after_blank and not line.text.startswith("#")
            and not ends_sentence(line.text) and following.text[0].islower())


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence boundaries inside text[start:end], as absolute offsets, whitespace trimmed."""
    end = len(text) if end is None else end
    spans, begin = [], start
    for match in SENTENCE_END.finditer(text, start, end):
        stop = match.end()
        if is_abbreviation(text, begin, match.start()) or not starts_sentence(text, stop, end):
            continue
        spans.append((begin, stop))
        begin = stop
    if begin < end:
        spans.append((begin, end))
    return [trimmed for s, e in spans if (trimmed := trim(text, s, e))[0] < trimmed[1]]


def is_abbreviation(text: str, begin: int, dot: int) -> bool:
    """'U.S.', 'Dr.' and single initials end with a dot but do not end a sentence."""
    if text[dot] != ".":
        return False
    word = text[begin:dot].rsplit(None, 1)[-1] if text[begin:dot].strip() else ""
    word = word.lstrip("\"'“‘(")
    return bool(re.fullmatch(r"(?:[A-Za-z]\.)*[A-Za-z]", word)) or word.lower() in ABBREVIATIONS


def starts_sentence(text: str, position: int, end: int) -> bool:
    """The next non-space character could begin a new sentence (not lower case)."""
    rest = text[position:end].lstrip()
    return not rest or not rest[0].islower()


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink a span so it has no surrounding whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def paragraphs(document: Document) -> list[tuple[str, int, int]]:
    """(section, start, end) of every body paragraph, in order; title and boilerplate dropped."""
    lines = split_lines(document.text)
    block_mode = "\n\n" in document.text.strip() and any(
        not line.after_blank for line in lines[1:])
    following: list[Line | None] = [None] * len(lines)  # the next line that is not page furniture
    for index in range(len(lines) - 2, -1, -1):
        after = lines[index + 1]
        following[index] = following[index + 1] if is_furniture(after.text) else after
    found: list[tuple[str, int, int]] = []
    section = ""
    previous_body: Line | None = None
    questions = interview_questions(lines, block_mode)
    for index, line in enumerate(lines):
        if index == 0 and line.text.lstrip("#").strip() == document.title:
            continue  # the title line: searchable through every passage's context instead
        if index in questions:
            section, previous_body = line.text, None
        elif line.text.lstrip("#").strip().casefold() == document.title.strip().casefold():
            previous_body = None  # the headline again (as a heading of the body, or after a dateline)
        elif previous_body is not None and continues(previous_body, line, block_mode):
            found[-1] = (found[-1][0], found[-1][1], line.end)
            previous_body = line
        elif broken_before(lines, index):
            found.append((section, line.start, line.end))  # a sentence that goes on below
            previous_body = line
        elif is_heading(line, following[index]):
            section, previous_body = line.text.lstrip("#").strip(), None
        elif (is_short_fragment(line.text) and not line.text[0].islower()) or is_furniture(line.text):
            previous_body = None  # page boilerplate such as "Also read"
        else:
            found.append((section, line.start, line.end))
            previous_body = line
    return found


def whole_text(document: Document) -> list[tuple[str, int, int]]:
    """The whole text as one paragraph: for a note too short to look like an article (a single
    line, a title and a fragment), which would otherwise vanish as title or boilerplate."""
    start, end = trim(document.text, 0, len(document.text))
    return [("", start, end)] if start < end else []


def split_long(text: str, start: int, end: int, budget: int, token_spans: TokenSpans) -> list[tuple[int, int]]:
    """Cut text[start:end] at sentence (then word) boundaries into pieces of at most budget tokens.

    The paragraph is tokenized once: a unit costs the word pieces that begin inside it.
    """
    starts = [start + s for s, _ in token_spans(text[start:end])]
    if len(starts) <= budget:
        return [(start, end)]

    def cost(s: int, e: int) -> int:
        return bisect_left(starts, e) - bisect_left(starts, s)

    units: list[tuple[int, int]] = []
    for s, e in sentence_spans(text, start, end):
        if cost(s, e) <= budget:
            units.append((s, e))
        else:
            units.extend((s + m.start(), s + m.end()) for m in WORD.finditer(text[s:e]))
    pieces: list[tuple[int, int]] = []
    piece_start, piece_end, used = units[0][0], units[0][1], cost(*units[0])
    for s, e in units[1:]:
        unit = cost(s, e)
        if used + unit > budget:
            pieces.append((piece_start, piece_end))
            piece_start, used = s, 0
        piece_end, used = e, used + unit
    pieces.append((piece_start, piece_end))
    return pieces


def context_of(title: str, section: str) -> str:
    """Title and section heading, which the model sees before every passage."""
    return "\n".join(part for part in (title, section) if part)


def embedding_input(passage: Passage) -> tuple[str, int]:
    """The text the model sees for a passage (title and section as context) and where the passage begins in it."""
    context = context_of(passage.title, passage.section)
    prefix = f"{context}\n" if context else ""
    return prefix + passage.text, len(prefix)


def chunk_document(document: Document, token_spans: TokenSpans, max_tokens: int) -> list[Passage]:
    """Split a document into passages that fit the model's window together with their context."""
    passages: list[Passage] = []
    budgets: dict[str, int] = {}  # per section: the context the model sees before each passage
    for number, (section, start, end) in enumerate(paragraphs(document) or whole_text(document), start=1):
        if section not in budgets:
            budgets[section] = max(32, max_tokens - len(token_spans(context_of(document.title, section))) - 2)
        for piece_start, piece_end in split_long(document.text, start, end, budgets[section], token_spans):
            passages.append(Passage(
                passage_id=f"{document.doc_id}#{len(passages) + 1}", doc_id=document.doc_id,
                title=document.title, source=document.source, section=section, paragraph=number,
                start=piece_start, end=piece_end, text=document.text[piece_start:piece_end]))
    return passages
