"""Exact counting through the real SDK against a loopback ``count_tokens`` server, with caching."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import pytest

from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.domain.sections import read_sections
from fantasy_kg.domain.text.tokens import COUNT_TOKENS_METHOD, EstimateCounter
from fantasy_kg.pipeline.sections import build_sections
from fantasy_kg.pipeline.token_counter import CountTokensCounter, make_counter

API_KEY = "sk-ant-test-0123456789-secret"


def server_count(text: str) -> int:
    """The loopback tokenizer: deliberately about twice the offline estimate."""
    return 3 * len(text.split()) + 7


class CountServer:
    """``POST /v1/messages/count_tokens`` on 127.0.0.1, recording every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if self.path != "/v1/messages/count_tokens":
                    self._send(404, {"type": "error", "error": {"type": "not_found_error"}})
                elif outer.fail_with:
                    self._send(
                        outer.fail_with,
                        {
                            "type": "error",
                            "error": {
                                "type": "invalid_request_error",
                                "message": "Your credit balance is too low\nto access the API.",
                            },
                        },
                    )
                else:
                    text = body["messages"][0]["content"]
                    self._send(200, {"input_tokens": server_count(text)})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[CountServer]:
    srv = CountServer()
    yield srv
    srv.close()


def _client(server: CountServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=API_KEY, base_url=server.url, max_retries=0)


def test_count_tokens_goes_through_the_sdk_and_is_cached(server: CountServer, tmp_path: Path):
    model = get_model("claude-opus-4-5")
    cache = tmp_path / "cache"
    counter = CountTokensCounter(_client(server), cache)
    text = "Mira Thorne walked north along the lantern road."
    assert counter.count(model, text) == server_count(text)
    assert len(server.requests) == 1
    sent = server.requests[0]
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["body"] == {"model": model.id, "messages": [{"role": "user", "content": text}]}
    # SDK 2.x sends the key as a bearer token (older versions used x-api-key).
    headers = sent["headers"]
    assert API_KEY in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert "anthropic-version" in sent["headers"]

    assert counter.count(model, text) == server_count(text)
    assert len(server.requests) == 1, "second count must come from the cache"
    fresh = CountTokensCounter(_client(server), cache)
    assert fresh.count(model, text) == server_count(text)
    assert len(server.requests) == 1, "the cache is on disk, shared across runs"
    # Keyed by model: another model is another count.
    fresh.count(get_model("claude-sonnet-4-6"), text)
    assert len(server.requests) == 2
    assert counter.count(model, "") == 0 and len(server.requests) == 2
    for path in cache.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text("utf-8")


def test_api_errors_are_one_line_without_the_key(server: CountServer, tmp_path: Path) -> None:
    server.fail_with = 400
    counter = CountTokensCounter(_client(server), tmp_path)
    with pytest.raises(ConfigError) as info:
        counter.count(get_model("claude-opus-4-5"), "some text")
    message = info.value.message
    assert "HTTP 400" in message and "--token-count estimate" in message
    assert "\n" not in message and API_KEY not in message


def test_build_sections_with_exact_counts_fits_and_reruns_for_free(
    server: CountServer, tmp_path: Path
) -> None:
    books = tmp_path / "books" / "tale"
    books.mkdir(parents=True)
    paras = [f"Para {i}: Mira spoke with Tomas about the crown and the road." for i in range(120)]
    (books / "01_tale.txt").write_text("The Tale\n\n" + "\n\n".join(paras), "utf-8")
    out = tmp_path / "sections"
    counter = CountTokensCounter(_client(server), tmp_path / "cache")
    summary = build_sections(
        books.parent,
        out,
        model="claude-haiku-4-5",
        max_tokens=8000,
        max_section_tokens=400,
        counter=counter,
    )
    sections = read_sections(out)
    assert summary.sections == len(sections) > 1
    for sec in sections:
        assert sec.meta.token_count_method == COUNT_TOKENS_METHOD
        # The server counts twice the estimate: the planner re-cut until exact counts fit.
        assert sec.meta.input_tokens == server_count(sec.text) <= 400
    calls = len(server.requests)
    assert calls > 0
    build_sections(
        books.parent,
        out,
        model="claude-haiku-4-5",
        max_tokens=8000,
        max_section_tokens=400,
        counter=CountTokensCounter(_client(server), tmp_path / "cache"),
    )
    assert len(server.requests) == calls, "unchanged books: no count_tokens call at all"


def test_make_counter_picks_exact_only_with_a_key(
    server: CountServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(make_counter(), EstimateCounter)
    assert isinstance(make_counter("estimate"), EstimateCounter)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        make_counter("api")
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    counter = make_counter(cache_dir=tmp_path)
    assert counter.exact
    assert counter.count(get_model("claude-opus-4-5"), "one two three") == server_count(
        "one two three"
    )
    assert isinstance(make_counter("estimate"), EstimateCounter)
