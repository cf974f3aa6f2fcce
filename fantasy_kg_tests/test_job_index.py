"""The job index: one series' jobs, or the owed ones, without parsing every job file.

Job files stay flat (the guide's ``<jobs_dir>/<batch_id>.json``); the SQLite index beside them
says which file belongs to which series and which still owes results. These tests count the
files a store parses (``JobStore.files_parsed``) instead of timing anything.
"""

import json
import logging
from pathlib import Path

import pytest

from fantasy_kg.llm.jobs import JobRecord, JobStore
from fantasy_kg.llm.results import load_all_provenance, series_record_files
from fantasy_kg.pipeline.graph import read_provenance


def _job(batch_id: str, series: str, *, settled: bool, n: int = 0) -> JobRecord:
    job = JobRecord(
        id=batch_id,
        output_dir="/tmp/out",
        model="claude-haiku-4-5",
        series=series,
        series_name=series,
        submitted_at=f"2026-01-01T00:00:{n % 60:02d}+00:00",
    )
    if settled:
        job.processing_status = "ended"
        job.results_processed_at = "2026-01-02T00:00:00+00:00"
    return job


def _fill(store: JobStore, settled: int, owed: int) -> list[str]:
    for n in range(settled):
        store.save(_job(f"msgbatch_done{n:05d}", f"series{n % 50}", settled=True, n=n))
    ids = []
    for n in range(owed):
        store.save(_job(f"msgbatch_owed{n:03d}", "ashen_crown", settled=False, n=n))
        ids.append(f"msgbatch_owed{n:03d}")
    return ids


def test_owed_jobs_parse_only_owed_files(tmp_path: Path) -> None:
    writer = JobStore(tmp_path / "jobs")
    owed_ids = _fill(writer, settled=300, owed=3)

    reader = JobStore(tmp_path / "jobs")
    owed = reader.owed_jobs()
    assert [j.id for j in owed] == owed_ids
    assert reader.files_parsed == 3  # 300 settled job files on disk, none of them opened

    per_series = JobStore(tmp_path / "jobs")
    assert len(per_series.all_jobs("series7")) == 6
    assert per_series.files_parsed == 6

    # The guide's lookup by id is unchanged: a flat file per batch.
    assert (tmp_path / "jobs" / "msgbatch_done00007.json").is_file()
    assert reader.load("msgbatch_done00007").series == "series7"


def test_a_job_settled_elsewhere_leaves_the_owed_list(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    [batch_id] = _fill(store, settled=0, owed=1)
    job = store.load(batch_id)
    job.processing_status = "ended"
    job.results_processed_at = "2026-01-02T00:00:00+00:00"
    store.save(job)
    assert store.owed_jobs() == []

    # A writer that bypassed the index (an older version) rewrote a file in place: the stale
    # "owed" row is re-checked against the file and corrected.
    job.results_processed_at = None
    store.save(job)
    raw = json.loads(store.job_path(batch_id).read_text())
    raw["results_processed_at"] = "2026-01-03T00:00:00+00:00"
    store.job_path(batch_id).write_text(json.dumps(raw))
    assert store.owed_jobs() == []
    parsed = store.files_parsed
    assert store.owed_jobs() == [] and store.files_parsed == parsed  # row fixed: not re-read


def test_existing_folder_is_indexed_once_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    for n in range(20):
        job = _job(f"msgbatch_old{n:03d}", "ashen_crown", settled=n % 2 == 0, n=n)
        (folder / f"{job.id}.json").write_text(job.model_dump_json(indent=2))
    (folder / "notes.json").write_text("not a job")

    with caplog.at_level(logging.WARNING, logger="fantasy_kg.llm.jobs"):
        first = JobStore(folder)
        assert len(first.owed_jobs("ashen_crown")) == 10
    assert [r.getMessage() for r in caplog.records if "indexing" in r.getMessage()] == [
        f"indexing 21 existing job files in {folder} (first use of the job index, once; job "
        "files stay where they are)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fantasy_kg.llm.jobs"):
        again = JobStore(folder)
        assert len(again.owed_jobs("ashen_crown")) == 10
    assert not caplog.records
    assert again.files_parsed == 10

    # A job file copied in by hand later is found too, and a deleted one is forgotten.
    extra = _job("msgbatch_copied", "ashen_crown", settled=False, n=59)
    (folder / "msgbatch_copied.json").write_text(extra.model_dump_json())
    (folder / "msgbatch_old001.json").unlink()
    ids = [j.id for j in JobStore(folder).owed_jobs("ashen_crown")]
    assert "msgbatch_copied" in ids and "msgbatch_old001" not in ids and len(ids) == 10


def test_series_records_are_found_by_name(tmp_path: Path) -> None:
    prov = tmp_path / "extracted" / "_provenance"
    prov.mkdir(parents=True)
    for series in ("ashen_crown", "ashen", "oz"):
        for n in range(3):
            cid = f"{series}_section_{n:02d}"
            (prov / f"{cid}.json").write_text(
                json.dumps(
                    {
                        "custom_id": cid,
                        "series": series,
                        "batch_id": "b",
                        "model": "m",
                        "prompt_version": "p",
                        "sha256": "s",
                        "file_name": f"{cid}.txt",
                        "chunk_id": cid,
                        "backend": "local",
                    }
                )
            )
    files = series_record_files(prov, "oz")
    assert [f.name for f in files] == [f"oz_section_{n:02d}.json" for n in range(3)]
    # "ashen" is a prefix of "ashen_crown": candidates by name, kept by their own series field.
    assert len(series_record_files(prov, "ashen")) == 6
    assert {p.custom_id for p in load_all_provenance(tmp_path / "extracted", "ashen")} == {
        f"ashen_section_{n:02d}" for n in range(3)
    }


def test_read_provenance_opens_only_its_series_job_files(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    store = JobStore(jobs)
    _fill(store, settled=100, owed=2)
    prov = read_provenance(jobs, "ashen_crown", set(), extracted_dir=tmp_path / "extracted")
    assert sorted(j.batch_id for j in prov.jobs) == ["msgbatch_owed000", "msgbatch_owed001"]
