"""Submission nonces in custom_ids: valid on the wire, mapped back to sections, old files read.

The end-to-end proofs (other clients' batches left alone, a wrongly adopted batch released) are
reliability scenarios in ``reliability/test_shared_workspace.py``; here are the rules they rest on.
"""

import json
import re
from pathlib import Path

from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.llm.ownership import (
    new_nonce,
    proves_ownership,
    split_wire_id,
    wire_custom_id,
    wire_ids,
)
from fantasy_kg.llm.requests import make_custom_id

PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_wire_ids_stay_valid_unique_and_readable() -> None:
    nonce = new_nonce()
    assert re.fullmatch(r"[0-9a-f]{12}", nonce) and new_nonce() != nonce
    short = "ashen_crown_section_01"
    longest = make_custom_id("x" * 80)  # already 64 characters
    twin = make_custom_id("x" * 81)  # same head, different hash suffix
    mapping = wire_ids([short, longest, twin], nonce)
    assert mapping[short] == f"{short}-{nonce}"
    assert all(PATTERN.match(w) for w in mapping.values())
    assert len(set(mapping.values())) == 3
    assert split_wire_id(mapping[short]) == (short, nonce)
    assert split_wire_id(short) == (short, "")
    assert wire_custom_id(short, "") == short


def test_only_a_batch_of_our_own_custom_ids_proves_ownership() -> None:
    ours = {"a-0123456789ab", "b-0123456789ab"}
    assert proves_ownership(["a-0123456789ab", "b-0123456789ab"], ours)
    assert proves_ownership(["a-0123456789ab"], ours)  # a partial stream is still ours
    # Same section names from another submission (another machine, another jobs folder): not ours.
    assert not proves_ownership(["a-fedcba987654", "b-fedcba987654"], ours)
    assert not proves_ownership(["a-0123456789ab", "c"], ours)
    assert not proves_ownership([], ours)


def test_job_files_from_before_nonces_stay_readable(tmp_path: Path) -> None:
    legacy = {
        "id": "msgbatch_legacy",
        "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 1},
        "created_at": "2026-11-01T00:00:00+00:00",
        "expires_at": "2026-11-02T00:00:00+00:00",
        "local_request_mapping": {"s_section_01": "/out/s_section_01_extracted.json"},
        "output_dir": "/out",
        "model": "claude-sonnet-5-5",
        "series_name": "S",
        "inputs": {"s_section_01": {"file_name": "s_section_01.txt", "chunk_id": "01"}},
        "reconciled": False,
    }
    (tmp_path / "msgbatch_legacy.json").write_text(json.dumps(legacy))
    store = JobStore(tmp_path)
    job = store.load("msgbatch_legacy")
    assert job.ownership == "created" and job.nonce == ""
    assert job.sections_by_wire_id() == {"s_section_01": "s_section_01"}
    assert [j.id for j in store.all_jobs()] == ["msgbatch_legacy"]
    job.ownership = "released"
    store.save(job)
    assert store.all_jobs() == [] and store.exists("msgbatch_legacy")
    assert "msgbatch_legacy" in store.known_batch_ids()
