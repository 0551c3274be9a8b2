"""The HTTP edge's bounds: body size, writes refused before their body is read, filter lists."""

from __future__ import annotations

import socket
import time

import httpx

from tests.conftest import STAND_IN, served

LIMIT = 100_000


def raw_request(url: str, head: str, body: bytes = b"", timeout: float = 5.0) -> str:
    """Send bytes as they are and return the status line (the server may answer before reading all)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        return sock.recv(65536).split(b"\r\n", 1)[0].decode()


def test_bodies_over_the_limit_and_writes_without_the_key_are_refused_before_the_body_is_read(faiss_folder_index):
    _, index = faiss_folder_index
    limits = {"SEMSEARCH_API_KEY": "s3cret", "SEMSEARCH_MAX_BODY_BYTES": str(LIMIT)}
    with served(index, STAND_IN | limits) as (_, url):
        huge = {"q": "harbour", "doc_id": [f"d{n}" for n in range(LIMIT // 4)]}
        refused = httpx.post(url + "/search", json=huge)
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "body_too_large"

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(50):
                yield b"x" * 10_000
        streamed = httpx.post(url + "/documents", content=chunks(), headers={"Authorization": "Bearer s3cret"})
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "body_too_large"
        # Headers announcing a body that never comes: without the key the answer is immediate, so
        # nothing of the body was awaited, read or parsed.
        head = ("POST /documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {LIMIT // 2}\r\n")
        assert raw_request(url, head).startswith("HTTP/1.1 401")
        assert raw_request(url, head.replace("Host: x", "Host: x\r\nAuthorization: Bearer wrong")).startswith("HTTP/1.1 401")
        ok = httpx.post(url + "/documents", headers={"Authorization": "Bearer s3cret"},
                        json={"documents": [{"id": "n1", "text": "A short note about the harbour."}]})
        assert ok.status_code == 200
        for answer in (httpx.get(url + "/healthz"), refused, httpx.get(url + "/nowhere")):
            assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_too_many_filter_values_are_a_422_naming_the_field(folder_index):
    _, index = folder_index
    with served(index, STAND_IN | {"SEMSEARCH_MAX_FILTER_VALUES": "3"}) as (_, url):
        fine = httpx.post(url + "/search", json={"q": "harbour", "doc_id": ["harbour", "dam", "x"]})
        assert fine.status_code == 200 and {r["doc_id"] for r in fine.json()["results"]} == {"harbour", "dam"}
        refused = httpx.post(url + "/search", json={"q": "harbour", "source": ["a", "b", "c", "d"]})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "source"


def test_document_limits_come_from_the_settings_and_are_in_the_spec(folder_index):
    _, index = folder_index
    limits = {"SEMSEARCH_MAX_DOCUMENT_CHARS": "50", "SEMSEARCH_MAX_DOCUMENTS_PER_CALL": "2", "SEMSEARCH_API_KEY": "k"}
    with served(index, STAND_IN | limits) as (_, url):
        auth = {"Authorization": "Bearer k"}
        long = httpx.post(url + "/documents", headers=auth, json={"documents": [{"id": "a", "text": "x" * 51}]})
        assert long.status_code == 422 and long.json()["error"]["field"] == "documents.0.text"
        for field, value in (("text", "A note\x00 with a NUL."), ("title", "Nul\x00l"), ("id", "a\x00b")):
            nul = httpx.post(url + "/documents", headers=auth, json={"documents": [{"id": "a", "text": "A note.",
                                                                                 field: value}]})
            assert nul.status_code == 422 and nul.json()["error"]["field"] == f"documents.0.{field}", nul.text
        many = httpx.post(url + "/documents", headers=auth,
                          json={"documents": [{"id": f"d{n}", "text": "A note."} for n in range(3)]})
        assert many.status_code == 422 and many.json()["error"]["field"] == "documents"
        spec = httpx.get(url + "/openapi.json").json()["components"]["schemas"]
        assert spec["IngestRequest"]["properties"]["documents"]["maxItems"] == 2
        assert spec["DocumentIn"]["properties"]["text"]["maxLength"] == 50


def test_a_body_that_stops_arriving_times_out_and_requests_over_the_cap_get_503_with_retry_after(faiss_folder_index):
    _, index = faiss_folder_index
    limits = {"SEMSEARCH_API_KEY": "k", "SEMSEARCH_BODY_TIMEOUT": "2", "SEMSEARCH_MAX_CONCURRENT_REQUESTS": "1"}
    with served(index, STAND_IN | limits) as (_, url):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{\"q\": ")  # and then nothing more
            deadline = time.monotonic() + 5
            busy = httpx.get(url + "/search", params={"q": "harbour"})
            while busy.status_code == 200 and time.monotonic() < deadline:  # until the stalled one is in
                time.sleep(0.1)
                busy = httpx.get(url + "/search", params={"q": "harbour"})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "busy"
            assert httpx.get(url + "/healthz").status_code == 200  # probes are never refused
            started, answer = time.monotonic(), b""
            while chunk := stalled.recv(65536):  # until the server closes the connection
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b"SEMSEARCH_BODY_TIMEOUT" in answer
            assert time.monotonic() - started < 5
        assert httpx.get(url + "/search", params={"q": "harbour"}).status_code == 200  # its slot is free again


def test_queries_without_words_are_a_422_and_answers_never_show_server_paths(folder_index, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from indexer.settings import Settings

    _, index = folder_index
    with TestClient(create_app(Settings(index_dir=index, model_path="hashing", reload_interval=0))) as client:
        for junk in ("\x00", "🙂🙂", "\u200b\u200b", "harbour\x00"):
            answer = client.get("/search", params={"q": junk})
            assert answer.status_code == 422 and answer.json()["error"]["field"] == "q", junk
        assert client.get("/search", params={"q": "harbour 🙂"}).json()["results"][0]["doc_id"] == "harbour"
        query = client.get("/openapi.json").json()["components"]["schemas"]["SearchBody"]["properties"]["q"]
        assert query["minLength"] == 1 and query["pattern"]  # what a query must be is stated in the spec
        wrong = client.put("/healthz")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET" and wrong.json()["error"]["code"] == \
            "method_not_allowed"
        assert client.options("/search").headers["allow"] == "GET, POST"  # every route on the path, not the first
        not_utf8 = client.post("/search", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
        assert not_utf8.status_code == 422 and not_utf8.json()["error"]["field"] == "body"
        for loose in ({"exact": 0}, {"k": "3"}, {"explain": "yes"}):  # JSON types as the spec states them
            assert client.post("/search", json={"q": "harbour", **loose}).status_code == 422, loose
        assert client.post("/search", json={"q": "harbour", "k": 3.0}).status_code == 200  # JSON's 3.0 is 3
    missing = tmp_path / "nowhere" / "index"
    with TestClient(create_app(Settings(index_dir=missing, model_path="hashing", reload_interval=0))) as client:
        for path in ("/readyz", "/search?q=harbour"):
            answer = client.get(path)
            assert answer.status_code == 503 and str(tmp_path) not in answer.text
            assert "no index found in index/" in answer.json()["error"]["message"]


def test_every_request_is_one_json_log_line_with_its_request_id_and_never_the_key(faiss_folder_index):
    import json
    from pathlib import Path

    _, index = faiss_folder_index
    with served(index, STAND_IN | {"SEMSEARCH_API_KEY": "t0ps3cret-key"}) as (server, url):
        given = httpx.get(url + "/search", params={"q": "harbour"}, headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        fresh = httpx.post(url + "/documents", headers={"Authorization": "Bearer t0ps3cret-key", "X-Request-ID": "<bad id>"},
                           json={"documents": [{"id": "n1", "text": "A note on the harbour."}]})
        assert fresh.status_code == 200 and len(fresh.headers["x-request-id"]) == 32
        deadline = time.monotonic() + 10  # the access line is written once the response has gone out
        while fresh.headers["x-request-id"] not in (log := Path(server.log_path).read_text()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line["logger"] == "semsearch.access"}
    assert access["abc-123"]["route"] == "/search" and access["abc-123"]["status"] == 200
    assert access["abc-123"]["method"] == "GET" and access["abc-123"]["duration_ms"] > 0
    assert access[fresh.headers["x-request-id"]]["route"] == "/documents"
    assert "t0ps3cret-key" not in log
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())  # nothing but JSON lines


def test_connections_that_never_finish_their_request_head_are_closed(faiss_folder_index):
    _, index = faiss_folder_index
    with served(index, STAND_IN | {"SEMSEARCH_HEADER_TIMEOUT": "1"}) as (_, url):
        host, port = url.removeprefix("http://").split(":")
        for sent in (b"", b"GET /search?q=harbour HTTP/1.1\r\nHost: x\r\n"):  # nothing; half a head
            with socket.create_connection((host, int(port)), timeout=10) as slow:
                slow.sendall(sent)
                started = time.monotonic()
                assert slow.recv(65536) == b""  # closed by the server, not answered
                assert time.monotonic() - started < 5
        with httpx.Client(base_url=url) as client:  # a keep-alive client that keeps asking is never cut off
            for _ in range(3):
                assert client.get("/search", params={"q": "harbour"}).status_code == 200
                time.sleep(0.6)


def test_requests_the_app_never_sees_still_get_a_json_error_with_the_security_headers(faiss_folder_index):
    _, index = faiss_folder_index
    with served(index, STAND_IN) as (_, url):
        long = httpx.get(url + "/search", params={"q": "harbour " * 5000})  # a 40 KB URL
        assert long.status_code == 414 and long.json()["error"]["code"] == "url_too_long"
        assert "POST /search" in long.json()["error"]["message"]
        assert long.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in long.headers
        garbage = raw_request(url, "NOT HTTP AT ALL\r\n")
        assert garbage.startswith("HTTP/1.1 400")
        with socket.create_connection(tuple(url.removeprefix("http://").split(":")), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            answer = sock.recv(65536)
        assert b"application/json" in answer and b'"code": "bad_request"' in answer
        assert httpx.get(url + "/healthz").status_code == 200  # and the server carries on
