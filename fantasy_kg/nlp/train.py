"""Train the LitBank entity tagger, or evaluate it on the held-out books.

``python -m fantasy_kg.nlp.train --litbank ../shared/datasets/litbank`` reproduces the shipped
model; ``--evaluate`` scores it (and the rules) on the held-out split.
Details: docs/architecture.md, "The embedded extractor".
"""

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fantasy_kg.domain.baseline.extractor import rule_spans
from fantasy_kg.domain.baseline.litbank import (
    Book,
    Mention,
    Score,
    book_text,
    mentions_from_chars,
    read_litbank,
    score,
)
from fantasy_kg.domain.baseline.tagging import TaggedSpan, Tagger, postprocess
from fantasy_kg.nlp.tagger import MODEL_DIR, SpacyTagger, load_model, named_span

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.training import Example

DEFAULT_LITBANK = Path("../shared/datasets/litbank")
HELDOUT_FILE = "litbank_heldout.txt"
SEED = 0
# Small CNN: enough context for literary names, a few MB on disk, and fast enough on a CPU that
# tagging all 14 Oz books stays a fraction of the 2-minute end-to-end budget.
MODEL_CONFIG = {
    "@architectures": "spacy.TransitionBasedParser.v2",
    "state_type": "ner",
    "extra_state_tokens": False,
    "hidden_width": 64,
    "maxout_pieces": 2,
    "use_upper": True,
    "nO": None,
    "tok2vec": {
        "@architectures": "spacy.HashEmbedCNN.v2",
        "pretrained_vectors": None,
        "width": 64,
        "depth": 3,
        "embed_size": 5000,
        "window_size": 1,
        "maxout_pieces": 2,
        "subword_features": True,
    },
}
LABELS = ("PER", "LOC", "GPE", "FAC", "ORG", "VEH")
# Scores printed for the report: the types, then the fine place types.
REPORT_ROWS = ("PER", "PLACE", "ORG", "VEH", "GPE", "LOC", "FAC", "ALL")
BOOKNLP_ANCHOR = "BookNLP (published, all LitBank entities incl. common nouns, nested): F1 88-90"


def heldout_names() -> list[str]:
    """The held-out book names shipped with the package (comments and blanks skipped)."""
    text = (Path(__file__).parent.parent / "data" / HELDOUT_FILE).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def split(books: Sequence[Book]) -> tuple[list[Book], list[Book], list[Book]]:
    """(train, dev, held-out): held-out from the shipped list, dev = every 10th other book."""
    held = set(heldout_names())
    rest = [b for b in books if b.name not in held]
    dev = rest[3::10]
    dev_names = {b.name for b in dev}
    train = [b for b in rest if b.name not in dev_names]
    return train, dev, [b for b in books if b.name in held]


def _examples(nlp: "Language", books: Sequence[Book], nominals: bool) -> list["Example"]:
    from spacy.tokens import Doc, Span
    from spacy.training import Example

    out = []
    for book in books:
        for sent in book.sentences:
            pred = Doc(nlp.vocab, words=sent.words)
            ref = Doc(nlp.vocab, words=sent.words)
            gold_spans = sent.mentions + (sent.nominals if nominals else [])
            ref.ents = [
                Span(ref, m.start, m.end, label=m.label)
                for m in sorted(gold_spans, key=lambda m: m.start)
            ]
            out.append(Example(pred, ref))
    return out


def predict(nlp: "Language", books: Sequence[Book]) -> list[list[Mention]]:
    """Named mentions per sentence of ``books`` (gold tokenization, one sentence per doc).

    The same filter as at run time (:func:`fantasy_kg.nlp.tagger.named_span`) keeps names only.
    """
    from spacy.tokens import Doc

    docs = (Doc(nlp.vocab, words=s.words) for b in books for s in b.sentences)
    out = []
    for doc in nlp.pipe(docs, batch_size=256):
        found = []
        for ent in doc.ents:
            span = named_span(ent)
            if span is not None:
                found.append(Mention(span.start, span.end, ent.label_))
        out.append(found)
    return out


def predict_consistent(nlp: "Language", books: Sequence[Book]) -> list[list[Mention]]:
    """:func:`predict`, then the run-time document consistency pass over each book's text."""
    raw = predict(nlp, books)
    out: list[list[Mention]] = []
    k = 0
    for book in books:
        text, offsets = book_text(book)
        spans = []
        for si in range(len(book.sentences)):
            for m in raw[k + si]:
                spans.append(
                    TaggedSpan(offsets[si][m.start][0], offsets[si][m.end - 1][1], m.label)
                )
        k += len(book.sentences)
        out.extend(
            mentions_from_chars(book, [(s.start, s.end, s.label) for s in postprocess(text, spans)])
        )
    return out


def gold(books: Sequence[Book]) -> list[list[Mention]]:
    """Gold mentions per sentence of ``books``."""
    return [s.mentions for b in books for s in b.sentences]


def train(
    books: Sequence[Book],
    out: Path,
    *,
    epochs: int = 12,
    patience: int = 3,
    nominals: bool = False,
    log: bool = True,
) -> dict[str, Score]:
    """Train on the training split, keep the epoch with the best dev F1, save it to ``out``.

    Args:
        books: LitBank books (all of them; the held-out ones are removed here).
        out: Directory to write the spaCy pipeline to (replaced).
        epochs: Upper bound on passes over the training set.
        patience: Stop after this many epochs without a better dev F1.
        nominals: Also train on common-noun entities ("the village"); only names are kept
            from the predictions. Measured on the dev books it helps places and hurts persons,
            and on Oz it types "the Lion" and "Billina" as places: off by default.
        log: Print one line per epoch (loss, dev F1, seconds).

    Returns:
        The dev scores of the saved model.
    """
    import spacy
    from thinc.api import fix_random_seed

    fix_random_seed(SEED)
    rng = random.Random(SEED)
    train_books, dev_books, _ = split(books)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner", config={"model": MODEL_CONFIG})
    for label in LABELS:
        ner.add_label(label)  # type: ignore[attr-defined]
    examples = _examples(nlp, train_books, nominals)
    optimizer = nlp.initialize(lambda: examples)
    best: tuple[float, bytes, dict[str, Score]] = (-1.0, b"", {})
    stale = 0
    started = time.monotonic()
    for epoch in range(epochs):
        t0 = time.monotonic()
        rng.shuffle(examples)
        losses: dict[str, float] = {}
        for batch in _batches(examples):
            nlp.update(batch, drop=0.2, sgd=optimizer, losses=losses)
        # Score and keep the running average of the weights: it generalizes better than the
        # last step's weights, and it is what spaCy itself saves.
        with nlp.use_params(optimizer.averages):
            pred = predict_consistent(nlp, dev_books)
            scores = score(gold(dev_books), pred) if dev_books else {}
            f1 = selection_f1(scores)
            if f1 > best[0] or not best[1]:
                best = (f1, nlp.to_bytes(), scores)
                stale = 0
            else:
                stale += 1
        if log:
            print(
                f"epoch {epoch + 1:2d} loss {losses.get('ner', 0.0):8.1f} dev F1 {f1:.3f} "
                f"{time.monotonic() - t0:5.1f}s",
                file=sys.stderr,
            )
        if stale >= patience:
            break
    nlp.from_bytes(best[1])
    nlp.meta.update(
        {
            "name": "litbank_ner",
            "version": "1.0.0",
            "description": "Named entities (PER LOC GPE FAC ORG VEH) of literary text, "
            "trained by fantasy_kg on LitBank (Bamman et al. 2019, CC BY 4.0).",
            "license": "CC BY 4.0 (training data: LitBank)",
            "sources": [{"name": "LitBank", "url": "https://github.com/dbamman/litbank"}],
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(out)
    if log:
        print(f"trained in {time.monotonic() - started:.0f}s → {out}", file=sys.stderr)
    return best[2]


def selection_f1(scores: dict[str, Score]) -> float:
    """What picks the epoch: the mean F1 of persons and places, the two types the graph needs."""
    return sum(scores[k].f1 if k in scores else 0.0 for k in ("PER", "PLACE")) / 2


def _batches(examples: Sequence["Example"]) -> "list[Sequence[Example]]":
    """Batches growing from 8 to 64 examples (spaCy's usual compounding schedule)."""
    out: list[Sequence[Example]] = []
    size, pos = 8.0, 0
    while pos < len(examples):
        out.append(examples[pos : pos + int(size)])
        pos += int(size)
        size = min(64.0, size * 1.001)
    return out


def rules_predict(books: Sequence[Book], tagger: Tagger | None = None) -> list[list[Mention]]:
    """The extractor's entity mentions per sentence, over each book's text.

    Rules alone when ``tagger`` is None.
    """
    out: list[list[Mention]] = []
    for book in books:
        text, _ = book_text(book)
        out.extend(mentions_from_chars(book, rule_spans(text, tagger=tagger)))
    return out


def format_table(columns: dict[str, dict[str, Score]]) -> str:
    """A plain-text table: rows = types, per column P / R / F1 (and gold count)."""
    header = f"{'type':6} {'gold':>5}  " + "  ".join(f"{name:^20}" for name in columns)
    sub = f"{'':6} {'':>5}  " + "  ".join(f"{'P':>6} {'R':>6} {'F1':>6}" for _ in columns)
    lines = [header, sub]
    for row in REPORT_ROWS:
        cells = []
        n_gold = 0
        for scores in columns.values():
            s = scores.get(row)
            if s is None or (s.gold == 0 and s.predicted == 0):
                cells.append(f"{'-':>6} {'-':>6} {'-':>6}")
                continue
            n_gold = max(n_gold, s.gold)
            cells.append(f"{s.precision:6.3f} {s.recall:6.3f} {s.f1:6.3f}")
        lines.append(f"{row:6} {n_gold:5d}  " + "  ".join(cells))
    return "\n".join(lines)


def evaluate(books: Sequence[Book], model: Path = MODEL_DIR, *, rules: bool = True) -> str:
    """The report: tagger (and rules) on the held-out books, exact span and type."""
    _, _, held = split(books)
    t0 = time.monotonic()
    nlp = load_model(model)
    load_s = time.monotonic() - t0
    g = gold(held)
    columns = {
        "tagger (shipped)": score(g, predict_consistent(nlp, held)),
        "model per sentence": score(g, predict(nlp, held)),
    }
    if rules:
        columns["extractor"] = score(g, rules_predict(held, SpacyTagger(model)))
        columns["rules alone"] = score(g, rules_predict(held))
    words = sum(len(s.words) for b in held for s in b.sentences)
    return (
        f"LitBank held-out: {len(held)} books, {words} tokens, named mentions only "
        f"(exact span + type)\n{format_table(columns)}\n"
        f"model load {load_s:.2f}s; anchor: {BOOKNLP_ANCHOR}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train (default) or ``--evaluate``."""
    parser = argparse.ArgumentParser(prog="python -m fantasy_kg.nlp.train", description=__doc__)
    parser.add_argument("--litbank", type=Path, default=DEFAULT_LITBANK)
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="model directory to write")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--limit-books", type=int, default=0, help="train on the first N only")
    parser.add_argument("--evaluate", action="store_true", help="score --out on held-out books")
    parser.add_argument(
        "--nominals", action="store_true", help="also train on common-noun entities"
    )
    parser.add_argument("--no-rules", action="store_true", help="skip the rules column")
    args = parser.parse_args(argv)
    try:
        books = read_litbank(args.litbank)
    except FileNotFoundError as exc:
        print(f"error: {exc} (pass --litbank)", file=sys.stderr)
        return 2
    if args.evaluate:
        print(evaluate(books, args.out, rules=not args.no_rules))
        return 0
    if args.limit_books:
        held = set(heldout_names())
        books = [b for b in books if b.name not in held][: args.limit_books]
    train(books, args.out, epochs=args.epochs, nominals=args.nominals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
