"""``fantasy-kg estimate`` reproduces the guide's cost tables and prices caching and bands right."""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fantasy_kg.cli.main import cli
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.estimate import SeriesTokens, estimate_costs, human_tokens, round_sig
from fantasy_kg.domain.sections import SectionMeta, write_section

# The guide's figures: series -> (sections, input tokens), and per model the table rows
# (real-time, batch, savings) plus the total row.
GUIDE_SERIES = {
    "harry_potter": (7, 1_562_150),
    "asoiaf": (8, 3_041_607),
    "wheel_of_time": (16, 6_717_033),
}
GUIDE_TABLES = {
    "claude-opus-4-5-20251101": {
        "harry_potter": (13.65, 6.83, 6.82),
        "asoiaf": (26.60, 13.30, 13.30),
        "wheel_of_time": (58.85, 29.43, 29.42),
        "Total": (99.10, 49.56, 49.54),
    },
    "claude-sonnet-4-5-20250929": {
        "harry_potter": (8.19, 4.10, 4.09),
        "asoiaf": (15.96, 7.98, 7.98),
        "wheel_of_time": (35.31, 17.66, 17.65),
        "Total": (59.46, 29.74, 29.72),
    },
}


def _split(total: int, parts: int) -> list[int]:
    """Uneven but exact split of ``total`` into ``parts`` section counts."""
    weights = [1 + (i % 3) for i in range(parts)]
    counts = [total * w // sum(weights) for w in weights]
    counts[-1] += total - sum(counts)
    return counts


def write_metas(folder: Path, series: dict[str, tuple[int, int]], **extra: Any) -> None:
    """Hand-made section files in the guide's layout (no token_model: Claude 4.5 counts)."""
    for slug, (n, total) in series.items():
        for i, tokens in enumerate(_split(total, n), start=1):
            meta = SectionMeta(
                series=slug, section=i, books=[f"{slug} book"], input_tokens=tokens, **extra
            )
            write_section(folder, slug, f"Text of {slug} section {i}.", meta)


def _run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_guide_tables_are_reproduced_exactly(tmp_path: Path) -> None:
    write_metas(tmp_path / "sections", GUIDE_SERIES)
    result = _run(
        "estimate", "--input-dir", str(tmp_path / "sections"), "--style", "guide", "--json"
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [m["model"] for m in doc["models"]] == list(GUIDE_TABLES)
    for model in doc["models"]:
        expected = GUIDE_TABLES[model["model"]]
        rows = {r["series"]: r for r in [*model["series"], model["total"]]}
        assert set(rows) == set(expected)
        for name, (realtime, batch, savings) in expected.items():
            row = rows[name]
            assert (row["realtime_usd"], row["batch_usd"], row["savings_usd"]) == (
                realtime,
                batch,
                savings,
            ), name
            if name != "Total":
                assert (row["sections"], row["input_tokens"]) == GUIDE_SERIES[name]
        total = rows["Total"]
        assert total["sections"] == 31 and total["input_tokens"] == 11_320_790
        assert human_tokens(total["output_tokens_priced"]) == "1.7M"
        assert rows["harry_potter"]["input_tokens_priced"] == 1_560_000
        assert rows["harry_potter"]["output_tokens_priced"] == 234_000
        assert rows["wheel_of_time"]["output_tokens_priced"] == 1_010_000


def test_guide_table_is_printed_like_the_guide(tmp_path: Path) -> None:
    write_metas(tmp_path / "s", GUIDE_SERIES)
    result = _run(
        "estimate",
        "--input-dir",
        str(tmp_path / "s"),
        "--model",
        "claude-opus-4-5",
        "--style",
        "guide",
    )
    assert result.exit_code == 0
    for text in ("1,562,150", "~234K", "$13.65", "$6.83", "$6.82", "~1.01M", "$29.43"):
        assert text in result.stdout
    for text in ("11,320,790", "~1.7M", "$99.10", "$49.56", "$49.54", "Claude Opus 4.5"):
        assert text in result.stdout
    assert "Sonnet" not in result.stdout


def test_exact_style_prices_unrounded_tokens(tmp_path: Path) -> None:
    write_metas(tmp_path / "s", GUIDE_SERIES)
    result = _run(
        "estimate", "--input-dir", str(tmp_path / "s"), "--model", "claude-opus-4-5", "--json"
    )
    doc = json.loads(result.stdout)
    model = get_model("claude-opus-4-5")
    p = model.price_per_mtok
    rows = {r["series"]: r for r in doc["models"][0]["series"]}
    for slug, (_, tokens) in GUIDE_SERIES.items():
        realtime = Decimal(tokens) * (
            Decimal(str(p.input)) + Decimal("0.15") * Decimal(str(p.output))
        )
        realtime /= Decimal(1_000_000)
        assert rows[slug]["realtime_usd"] == float(
            realtime.quantize(Decimal("0.01"), "ROUND_HALF_UP")
        )
        output = Decimal(tokens) * Decimal("0.15")
        assert rows[slug]["output_tokens"] == int(output.quantize(Decimal(1), "ROUND_HALF_UP"))
    assert doc["style"] == "exact" and doc["assumptions"]


def test_cached_prefix_costs_one_write_and_reads_at_batch_rates() -> None:
    model = get_model("claude-opus-4-5")
    p = model.price_per_mtok
    n, prefix = 10, 5000  # above Opus 4.5's 4,096-token minimum
    series = [SeriesTokens("s", (100_000,) * n, prefix_tokens=prefix)]
    row = estimate_costs(series, model).rows[0]
    half = Decimal(str(model.batch_discount))
    uncached = row.batch_usd + half * Decimal(prefix * n) * Decimal(str(p.input)) / 10**6
    cached = (
        row.batch_usd
        + half
        * (
            Decimal(prefix) * Decimal(str(p.cache_write_1h))
            + Decimal(prefix * (n - 1)) * Decimal(str(p.cache_read))
        )
        / 10**6
    )
    assert row.batch_with_prefix_usd == uncached
    assert row.batch_cached_prefix_usd == cached < uncached
    assert row.batch_usd == row.realtime_usd * half
    # A prefix below the model's minimum cacheable length is not cached at all.
    short = estimate_costs([SeriesTokens("s", (100_000,) * n, prefix_tokens=1000)], model).rows[0]
    assert short.batch_cached_prefix_usd == short.batch_with_prefix_usd


def test_counts_are_scaled_to_the_priced_models_tokenizer() -> None:
    counted = SeriesTokens("s", (1_000_000,), token_model="claude-opus-4-5")
    newer = get_model("claude-sonnet-5-5")
    row = estimate_costs([counted], newer).rows[0]
    factor = newer.tokenizer_factor / get_model("claude-opus-4-5").tokenizer_factor
    assert row.tokens_scaled and row.input_tokens_priced == round(1_000_000 * factor)
    same = estimate_costs([counted], get_model("claude-opus-4-5")).rows[0]
    assert not same.tokens_scaled and same.input_tokens_priced == 1_000_000


def test_long_prompt_price_band_applies_per_section() -> None:
    model = get_model("claude-haiku-5-5")
    band = model.price_bands[0]
    small, large = band.above_prompt_tokens // 2, band.above_prompt_tokens * 2
    row_small = estimate_costs([SeriesTokens("s", (small,), token_model=model.id)], model).rows[0]
    row_large = estimate_costs([SeriesTokens("s", (large,), token_model=model.id)], model).rows[0]
    per_token_small = row_small.realtime_usd / small
    per_token_large = row_large.realtime_usd / large
    expected = Decimal(str(band.price_per_mtok.input)) / Decimal(str(model.price_per_mtok.input))
    assert per_token_large / per_token_small == expected


def test_round_sig_and_human_tokens_follow_the_guide() -> None:
    assert round_sig(1_562_150) == 1_560_000
    assert round_sig(Decimal("234322.5")) == 234_000
    assert round_sig(1_007_555) == 1_010_000
    assert [human_tokens(v) for v in (1_562_150, 234_322, 1_007_555, 1_698_118)] == [
        "1.56M",
        "234K",
        "1.01M",
        "1.7M",
    ]


def test_default_model_is_the_one_the_sections_were_counted_for(tmp_path: Path) -> None:
    write_metas(tmp_path / "s", {"tale": (2, 10_000)}, token_model="claude-haiku-4-5-20251001")
    doc = json.loads(_run("estimate", "--input-dir", str(tmp_path / "s"), "--json").stdout)
    assert [m["model"] for m in doc["models"]] == ["claude-haiku-4-5-20251001"]


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--model", "claude-nope"], "unknown model 'claude-nope'; known models: "),
        (["--output-ratio", "-1"], "--output-ratio"),
        (["--series", "missing"], "no section files of series 'missing'"),
    ],
)
def test_estimate_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], phrase: str) -> None:
    write_metas(tmp_path / "s", {"tale": (2, 10_000)})
    result = _run("estimate", "--input-dir", str(tmp_path / "s"), *args)
    assert result.exit_code == 2
    assert phrase in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_estimate_without_sections_says_what_to_run(tmp_path: Path) -> None:
    result = _run("estimate", "--input-dir", str(tmp_path / "none"))
    assert result.exit_code == 2 and "fantasy-kg sections" in result.stderr
    (tmp_path / "empty").mkdir()
    result = _run("estimate", "--input-dir", str(tmp_path / "empty"))
    assert result.exit_code == 2 and "no section files" in result.stderr
