"""Grounding: every mention and quote is re-found in the section text with original offsets."""

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fantasy_kg.domain.graph.build import build_graph
from fantasy_kg.domain.graph.grounding import (
    GroundingConfig,
    SectionText,
    locate_in_book,
    normalize_text,
    normalize_with_offsets,
)
from fantasy_kg_tests.graph_fixtures import (
    BOOK1,
    BOOK2,
    SERIES,
    crafted_ontology,
    crafted_results,
    write_series_sections,
)


def test_exact_match_returns_original_offsets():
    text = "The ferry came home. Mira Thorne lit the lanterns."
    g = SectionText(text).ground("Mira Thorne lit", "quote")
    assert g.status == "exact"
    assert text[g.start : g.end] == "Mira Thorne lit"


def test_typographic_quotes_and_line_breaks_are_found_as_normalized():
    text = "Intro.\n\n\u201cTomas is late again,\u201d said Mira, and she lit the\nlanterns."
    quote = '"Tomas is late again," said Mira, and she lit the lanterns.'
    g = SectionText(text).ground(quote, "quote")
    assert g.status == "normalized"
    assert g.start is not None and g.end is not None
    span = text[g.start : g.end]
    assert span.startswith("\u201cTomas") and span.endswith("lanterns.")
    assert normalize_text(span) == normalize_text(quote)


def test_dashes_ellipses_case_and_soft_hyphens_normalize():
    text = "He waited\u2014long\u2026 for the ferry\u00adman OF Dunmere."
    g = SectionText(text).ground("he waited-long... for the ferryman of dunmere.", "quote")
    assert g.status == "normalized"
    assert text[g.start : g.end] == text  # whole sentence, original characters


def test_near_verbatim_quote_is_fuzzy_with_score():
    text = "Tomas Vell was the sworn enemy of Tomas Reed, and everyone on the river knew it."
    g = SectionText(text).ground("Tomas Vell was the sworn enemi of Tomas Reed", "quote")
    assert g.status == "fuzzy"
    assert 85 <= g.score < 100
    assert g.start is not None and "sworn enemy" in text[g.start : g.end]


def test_invented_quote_is_not_found_and_fuzzy_threshold_is_configurable():
    text = "Tomas Vell was the sworn enemy of Tomas Reed."
    section = SectionText(text)
    assert section.ground("The dragon ate the moon over Greywatch.", "quote").status == "not_found"
    strict = GroundingConfig(fuzzy=False)
    assert section.ground("Tomas Vell was the sworn enemi", "quote", strict).status == "not_found"


def test_names_are_found_at_word_boundaries():
    text = "Miranda sang. Later Mira came."
    g = SectionText(text).ground("Mira", "mention")
    assert g.status == "exact"
    assert g.start == text.index("Mira came")


def test_short_names_are_never_fuzzy():
    assert SectionText("Tom and Jon.").ground("Tim", "mention").status == "not_found"


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(
        st.text(alphabet="abcdefgh\u2019\u201c\u201d'\"-\u2014", min_size=1, max_size=6),
        min_size=3,
        max_size=25,
    ),
    seps=st.lists(st.sampled_from([" ", "\n", "  ", "\n\n", "\t"]), min_size=25, max_size=25),
    data=st.data(),
)
def test_normalized_spans_map_back_to_the_original(words, seps, data):
    text = "".join(w + s for w, s in zip(words, seps, strict=False))
    norm, offsets = normalize_with_offsets(text)
    assert len(norm) == len(offsets)
    assert all(0 <= o < len(text) for o in offsets)
    assert list(offsets) == sorted(offsets)
    # Any substring of the original, re-spaced and re-quoted, is found as a span of the original
    # whose normalized text equals the needle's.
    i = data.draw(st.integers(0, len(words) - 2))
    j = data.draw(st.integers(i + 1, len(words)))
    needle = " ".join(words[i:j]).replace("\u2019", "'").upper()
    if not normalize_text(needle):
        return
    g = SectionText(text).ground(needle, "quote", GroundingConfig(fuzzy=False))
    assert g.found
    assert g.start is not None and g.end is not None
    assert normalize_text(text[g.start : g.end]) == normalize_text(needle)


def test_book_offsets_follow_the_section_spans(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    second = sections[1]  # end of book 1 + start of book 2
    text = second.text
    start = text.index("Tomas Vell rode")
    pos = locate_in_book(second.meta.spans, start, start + len("Tomas Vell"))
    assert pos is not None
    assert pos.book_file == "02_the_herald.txt"
    assert BOOK2[pos.start : pos.end] == "Tomas Vell"
    start = text.index("Tomas Reed lived")
    pos = locate_in_book(second.meta.spans, start, start + 10)
    assert pos is not None and pos.book_file == "01_the_ferry.txt"
    assert BOOK1[pos.start : pos.end] == "Tomas Reed"


def test_every_grounded_row_points_at_its_text_in_the_book(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    graph = build_graph(sections, crafted_results(), crafted_ontology())
    books = {"01_the_ferry.txt": BOOK1, "02_the_herald.txt": BOOK2}
    by_file = {s.file_name: s for s in sections}
    for m in graph.mentions:
        assert m.status == "exact", m
        assert m.book_file is not None and m.char_start is not None and m.char_end is not None
        assert books[m.book_file][m.char_start : m.char_end] == m.surface
        sec_text = by_file[m.file_name].text
        assert sec_text[m.section_char_start : m.section_char_end] == m.surface
    statuses = {e.quote: e.status for e in graph.evidence}
    assert statuses["Tomas cursed Mira by name."] == "not_found"
    typographic = next(e for e in graph.evidence if e.quote.startswith('"Tomas is late'))
    assert typographic.status == "normalized"
    assert typographic.book_file == "01_the_ferry.txt"
    assert typographic.char_start is not None and typographic.char_end is not None
    assert BOOK1[typographic.char_start : typographic.char_end].startswith("\u201cTomas is late")
    assert "\n" in BOOK1[typographic.char_start : typographic.char_end]
    for e in graph.evidence:
        if e.status == "exact":
            assert e.book_file is not None and e.char_start is not None
            assert books[e.book_file][e.char_start : e.char_end] == e.quote
    # The not-found quote is kept, flagged, and counts against the grounding rate.
    stats = graph.stats
    assert stats.evidence == len(graph.evidence)
    assert stats.evidence_grounded == stats.evidence - 1
    assert 0 < stats.grounding_rate < 1
    assert graph.series == SERIES


def test_a_real_quote_with_an_invented_clause_appended_is_not_found():
    quote = "Tomas Vell was the sworn enemy of Tomas Reed, and everyone on the river knew it"
    text = "Filler. " * 20 + quote + ". More filler." * 20
    padded = quote + " and then he wept beneath the silent stars of the far west"
    assert SectionText(text).ground(quote, "quote").status == "exact"
    assert SectionText(text).ground(padded, "quote").status == "not_found"


def test_fuzzy_search_in_a_long_section_uses_anchor_words_and_finds_the_span():
    filler = "The ferry crossed the brown river while the lanterns burned low. " * 3000
    sentence = "Hesper Quill had trained Mira to hold her tongue in great halls."
    text = filler + sentence + " " + filler
    section = SectionText(text)
    g = section.ground("Hesper Quill had trained Mira to hold her tounge in great halls.", "quote")
    assert g.status == "fuzzy" and g.start is not None
    assert text[g.start : g.end].startswith("Hesper Quill had trained")
    # A misspelt single name has no intact anchor word: the whole section is searched.
    text = filler + "the Guildmistress of Saltharrow " + filler
    name = SectionText(text).ground("Guildmistriss", "mention")
    assert name.status == "fuzzy" and name.start is not None
    assert text[name.start : name.end] == "Guildmistress"
