"""The learned entity tagger: LitBank data handling, the training command, the shipped model, and
how the baseline extractor uses it."""

from pathlib import Path

import pytest

from fantasy_kg.domain.baseline.extractor import extract
from fantasy_kg.domain.baseline.litbank import (
    Mention,
    default_heldout,
    is_named,
    read_brat,
    read_litbank,
    score,
)
from fantasy_kg.domain.baseline.tagging import TaggedSpan
from fantasy_kg.nlp import train as train_mod
from fantasy_kg.nlp.tagger import MODEL_DIR, SpacyTagger, load_model

LITBANK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "litbank"


def _brat(tmp_path: Path, name: str, text: str, spans: list[tuple[str, str]]) -> Path:
    """Write a LitBank-style brat pair; spans are (label, exact substring), first occurrence."""
    folder = tmp_path / "entities" / "brat"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_brat.txt").write_text(text, encoding="utf-8")
    rows = []
    for i, (label, sub) in enumerate(spans, start=1):
        start = text.index(sub)
        rows.append(f"T{i}\t{label} {start} {start + len(sub)}\t{sub}")
    (folder / f"{name}_brat.ann").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_named_spans_are_capitalized_words_with_lowercase_linkers_only_inside() -> None:
    assert is_named(["Tom"]) and is_named(["TOM"]) and is_named(["Duke", "of", "York"])
    assert is_named(["Lincoln", "'s", "Inn", "Hall"])
    assert not is_named(["the", "Lord", "Chancellor"])
    assert not is_named(["the", "house"]) and not is_named(["his", "sister"])


def test_brat_files_become_one_flat_layer_of_names_plus_nominals(tmp_path: Path) -> None:
    text = "Aunt Polly looked at Tom 's younger brother .\nThey went to the village near London ."
    folder = _brat(
        tmp_path,
        "1_x",
        text,
        [
            ("PER", "Aunt Polly"),
            ("PER", "Aunt"),
            ("PER", "Tom"),
            ("PER", "Tom 's younger brother"),
            ("GPE", "the village near London"),
            ("GPE", "London"),
        ],
    )
    book = read_brat(folder / "1_x_brat.txt", folder / "1_x_brat.ann")
    first, second = book.sentences
    # Outermost name wins ("Aunt Polly" over "Aunt"); a name inside a nominal phrase is kept.
    assert first.mentions == [Mention(0, 2, "PER"), Mention(4, 5, "PER")]
    assert second.mentions == [Mention(6, 7, "GPE")]
    # Nominals that overlap a name are not training targets (a flat layer has no nesting).
    assert first.nominals == [] and second.nominals == []


def test_scores_are_exact_span_and_type_with_places_grouped() -> None:
    gold = [[Mention(0, 1, "PER"), Mention(3, 4, "GPE"), Mention(6, 8, "FAC")]]
    pred = [[Mention(0, 1, "PER"), Mention(3, 4, "LOC"), Mention(6, 7, "FAC")]]
    scores = score(gold, pred)
    assert (scores["PER"].precision, scores["PER"].recall) == (1.0, 1.0)
    # GPE predicted as LOC: wrong fine type, right place group.
    assert scores["GPE"].recall == 0.0 and scores["PLACE"].tp == 1
    assert scores["PLACE"].gold == 2 and scores["PLACE"].predicted == 2
    assert scores["ALL"].tp == 2  # the FAC span is one token short: no credit


@pytest.mark.skipif(not LITBANK.is_dir(), reason="shared LitBank not present")
def test_the_shipped_heldout_list_is_the_fixed_hash_split_and_never_trained_on() -> None:
    books = read_litbank(LITBANK)
    held = train_mod.heldout_names()
    assert held == default_heldout(b.name for b in books)
    train, dev, heldout = train_mod.split(books)
    assert {b.name for b in heldout} == set(held) and len(held) == 22
    assert not ({b.name for b in train} | {b.name for b in dev}) & set(held)


def test_the_training_command_trains_and_evaluates_on_a_tiny_slice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if LITBANK.is_dir():
        root, limit = LITBANK, ["--limit-books", "2"]
    else:  # a fresh clone without ../shared: a synthetic LitBank-format slice
        text = "\n".join(
            f"{name} walked to {place} with {other} ."
            for name, place, other in [
                ("Tom", "London", "Anne"),
                ("Mary", "Paris", "John"),
                ("Emma", "Bath", "Harriet"),
            ]
            * 10
        )
        root = _brat(tmp_path / "lb", "5_demo", text, [("PER", "Tom"), ("GPE", "London")])
        limit = []
    out = tmp_path / "model"
    code = train_mod.main(["--litbank", str(root), "--epochs", "1", "--out", str(out), *limit])
    assert code == 0 and (out / "config.cfg").is_file() and (out / "ner").is_dir()
    tagger = SpacyTagger(out)
    spans = tagger.tag("Tom walked to London with Anne.")
    assert all(isinstance(s, TaggedSpan) and s.end > s.start for s in spans)
    if LITBANK.is_dir():
        assert train_mod.main(["--litbank", str(root), "--evaluate", "--out", str(out)]) == 0
        report = capsys.readouterr().out
        assert "PER" in report and "PLACE" in report and "22 books" in report


def test_a_missing_litbank_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_mod.main(["--litbank", str(tmp_path / "nowhere")]) == 2
    assert "no LitBank brat files" in capsys.readouterr().err


def test_the_shipped_model_tags_people_and_places() -> None:
    assert (MODEL_DIR / "config.cfg").is_file(), "the model must ship inside the package"
    load_model.cache_clear()
    tagger = SpacyTagger()
    text = (
        '"Come along," said Dorothy to Uncle Henry, and they travelled from London to Paris. '
        "Dorothy lived in Kansas."
    )
    spans = [(text[s.start : s.end], s.label) for s in tagger.tag(text)]
    # The second "Dorothy" opens a sentence: found through the first (document consistency).
    assert spans.count(("Dorothy", "PER")) == 2
    assert ("Uncle Henry", "PER") in spans
    spans_by_text = dict(spans)
    assert spans_by_text.get("London") in ("GPE", "LOC", "FAC")
    assert spans_by_text.get("Kansas") in ("GPE", "LOC", "FAC")


class _FakeTagger:
    """A tagger that finds exactly the strings it is given (every occurrence)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def tag(self, text: str) -> list[TaggedSpan]:
        out = []
        for name, label in self.names.items():
            pos = text.find(name)
            while pos >= 0:
                out.append(TaggedSpan(pos, pos + len(name), label))
                pos = text.find(name, pos + 1)
        return sorted(out, key=lambda s: s.start)


def test_the_extractor_takes_spans_and_types_from_the_tagger() -> None:
    text = (
        "Instantly Dorothy ran. Fate was cruel, and Truth was cruel too. Fate smiled. "
        "Truth wept. Dorothy sailed to Ev with Ozma. The Nome King waited in Ev."
    )
    tagger = _FakeTagger({"Dorothy": "PER", "Ev": "GPE", "Ozma": "PER"})
    result = extract(text, tagger=tagger)
    by_name = {e.name: e.type for e in result.entities}
    # A sentence-initial word is not part of the name; the tagger's place is a place.
    assert by_name.get("Dorothy") == "Character" and "Instantly Dorothy" not in by_name
    assert by_name.get("Ev") == "Location"
    # Seen once, but tagged: kept.
    assert by_name.get("Ozma") == "Character"
    # Capitalized twice, never tagged, no structural cue (a verb is not one): not names.
    assert "Fate" not in by_name and "Truth" not in by_name
    # The rules' cues still work for names the tagger missed ("the Nome King": a title head).
    assert "Nome King" in by_name
    # Every alias and mention is on one line and verbatim.
    for ent in result.entities:
        assert all("\n" not in a for a in ent.aliases)
        assert all(m in text for m in ent.mentions)


def test_a_name_next_to_a_verb_of_speech_is_a_person_whatever_the_model_guessed() -> None:
    from fantasy_kg.domain.baseline.tagging import postprocess, speakers

    text = (
        '"Not yet," said Jo. Then Bessie cried out. Bessie went to the window.\n'
        "Presently Zeb said it, and Aunt Polly cried, presently. White Rabbit said no; the white\n"
        "White Rabbit ran.\n"
        "Imperialism in Australia demanded care. \"Go,\" the Mem Sahib said. 'Hm,' said Mr."
    )
    found = [text[s:e] for s, e in speakers(text)]
    # A leading stopword, or a word the text also writes in lowercase ("presently") in a run
    # said once, is dropped; a title and a repeated run ("White Rabbit") are not; "demanded"
    # is no speech verb; an epithet after "the" and a bare title are left to the model.
    assert found == ["Jo", "Bessie", "Zeb", "Aunt Polly", "White Rabbit"]
    # The model typed "Bessie" as a place twice and missed "Jo": the speech cue wins, and
    # document consistency carries the person type to every occurrence.
    model = [
        TaggedSpan(text.index("Bessie"), text.index("Bessie") + 6, "GPE"),
        TaggedSpan(text.rindex("Bessie"), text.rindex("Bessie") + 6, "GPE"),
        TaggedSpan(text.index("Australia"), text.index("Australia") + 9, "GPE"),
    ]
    spans = [(text[s.start : s.end], s.label) for s in postprocess(text, model)]
    assert spans.count(("Bessie", "PER")) == 2 and ("Jo", "PER") in spans
    assert ("Australia", "GPE") in spans


def test_place_heads_that_come_first_and_names_without_edge_punctuation() -> None:
    import spacy
    from spacy.tokens import Doc, Span

    from fantasy_kg.domain.baseline.tagging import retype_by_head
    from fantasy_kg.nlp.tagger import named_span

    text = "They sailed up Lake George to Fort William with George ."
    spans = [
        TaggedSpan(text.index("Lake"), text.index(" to"), "PER"),
        TaggedSpan(text.index("Fort"), text.index(" with"), "PER"),
        TaggedSpan(text.rindex("George"), text.rindex("George") + 6, "PER"),
    ]
    labels = [s.label for s in retype_by_head(text, spans)]
    assert labels == ["LOC", "FAC", "PER"]  # a lone "George" stays a person

    doc = Doc(spacy.blank("en").vocab, words=["to", "New", "York", ",", "then"])
    found = named_span(Span(doc, 1, 4, label="GPE"))
    assert found is not None and found.text == "New York"
