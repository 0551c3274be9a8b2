"""The HTTP API through TestClient: response shape, every bad input, and a broken index."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from indexer.model.onnx_encoder import OnnxEncoder
from indexer.settings import Settings
from service.app import create_app
from tests.conftest import metric_values

ERROR_KEYS = {"status", "code", "message"}


@pytest.fixture(scope="module")
def client(seed_index):
    # No watcher: nothing here waits for a new generation, and a watcher's looks are engine calls
    # that test_metrics_count_the_engines_calls_by_operation would count as another search's
    with TestClient(create_app(Settings(index_dir=seed_index, reload_interval=3600))) as test_client:
        yield test_client


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert ERROR_KEYS <= set(body["error"])
    assert body["error"]["status"] == status and body["error"]["code"] == code
    return body["error"]


def test_get_search_returns_ranked_results_with_sources(client):
    response = client.get("/search", params={"q": "why won't Russia stop", "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "why won't Russia stop" and body["took_ms"] >= 0
    assert len(body["results"]) == 3
    first = body["results"][0]
    assert body["no_good_match"] is False and first["match"] == "strong" and 0.5 <= first["relevance"] <= 1
    for key in ("rank", "score", "relevance", "match", "text", "highlight", "doc_id", "title", "source", "section",
                "paragraph", "start", "end"):
        assert key in first
    assert first["rank"] == 1 and first["section"] == "Why Russia Won’t Stop"
    assert first["highlight"] in first["text"]


def test_post_search_gives_the_same_answer_as_get(client):
    got = client.get("/search", params={"q": "how many casualties", "k": 5}).json()
    posted = client.post("/search", json={"q": "how many casualties", "k": 5}).json()
    assert [r["passage_id"] for r in got["results"]] == [r["passage_id"] for r in posted["results"]]


@pytest.mark.parametrize("params, field", [
    ({"q": ""}, "q"),
    ({"q": "   \t "}, "q"),
    ({"q": "x" * 1001}, "q"),
    ({"q": "war", "k": 0}, "k"),
    ({"q": "war", "k": 51}, "k"),
    ({"q": "war", "k": "ten"}, "k"),
    ({"q": "war", "mode": "psychic"}, "mode"),
    ({}, "q"),
])
def test_bad_input_gets_a_422_in_the_one_error_shape(client, params, field):
    for response in (client.get("/search", params=params), client.post("/search", json=params)):
        error = assert_error_shape(response, 422, "invalid_request")
        assert error["field"] == field and field in error["message"]


def test_body_that_is_not_an_object_is_a_422(client):
    response = client.post("/search", content=b"garbage", headers={"content-type": "application/json"})
    error = assert_error_shape(response, 422, "invalid_request")
    assert error["field"] == "body" and error["message"].startswith("body: not valid JSON")


def test_unknown_path_is_a_404_in_the_one_error_shape(client):
    assert_error_shape(client.get("/no/such/thing"), 404, "not_found")


def test_health_readiness_openapi_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["passages"] == 12
    assert client.get("/docs").status_code == 200
    assert "/search" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text


# A damaged index's 503 and its repair fix: tests/test_faiss_repair.py (the damage is an engine's own).
@pytest.mark.parametrize("unusable, words, fix", [
    ({"index_dir": "never-built"}, "no index found", "semsearch index"),
    ({"model_path": "hashing"}, "all-MiniLM-L6-v2", "semsearch index"),  # built with another model
])
def test_service_starts_without_a_usable_index_and_says_how_to_fix_it(seed_index, tmp_path, unusable, words, fix):
    given = {"index_dir": seed_index, **unusable}
    if given["index_dir"] == "never-built":
        given["index_dir"] = tmp_path / "never-built"
    with TestClient(create_app(Settings(**given))) as broken:
        assert broken.get("/healthz").status_code == 200
        for response in (broken.get("/readyz"), broken.get("/search", params={"q": "war"})):
            error = assert_error_shape(response, 503, "not_ready")
            assert words in error["message"]
            assert error["fix"].startswith(fix)
        assert metric_values(broken.get("/metrics").text)[("semsearch_ready", ())] == 0


def test_explain_paging_and_filters_over_http(client):
    every = {"q": "drone production", "min_relevance": 0}
    explained = client.get("/search", params={**every, "k": 12, "explain": "true"}).json()
    explains = [r["explain"] for r in explained["results"]]
    assert all(set(e) == {"dense", "keyword", "cosine", "keyword_share", "late", "query_kind"} and e["dense"]["rank"] >= 1
               for e in explains)
    assert any(e["keyword"] is None and e["keyword_share"] == 0 for e in explains)
    assert {e["query_kind"] for e in explains} == {"question"}  # a few keywords take the questions' weights
    stated = client.get("/search", params={"q": "drone production doubled in Russia this year", "explain": "true",
                                           "min_relevance": 0, "k": 1}).json()["results"][0]["explain"]
    assert stated["query_kind"] == "statement"
    page = client.get("/search", params={**every, "k": 3, "offset": 3}).json()["results"]
    assert [r["passage_id"] for r in page] == [r["passage_id"] for r in explained["results"][3:6]]
    assert page[0]["rank"] == 4
    none = client.post("/search", json={"q": "war", "doc_id": ["no-such-article"]}).json()
    assert none["results"] == [] and none["no_good_match"] is True


def test_metrics_count_requests_by_route_and_status_and_describe_the_index(seed_index):
    with TestClient(create_app(Settings(index_dir=seed_index))) as fresh:
        for _ in range(3):
            fresh.get("/search", params={"q": "why won't Russia stop"})
        fresh.get("/search", params={"q": " "})
        fresh.get("/no/such/page")
        response = fresh.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        values = metric_values(response.text)
        index = fresh.app.state.runtime.searcher.index
        info, generation = index.info, index.generation

    def requests(route: str, status: str) -> float:
        return values[("semsearch_http_requests_total", (("method", "GET"), ("route", route), ("status", status)))]

    assert requests("/search", "200") == 3 and requests("/search", "422") == 1
    assert requests("unmatched", "404") == 1
    assert values[("semsearch_http_request_duration_seconds_count", (("route", "/search"),))] == 4
    assert values[("semsearch_ready", ())] == 1
    assert values[("semsearch_index_passages", ())] == info.passages
    # segments are FAISS's own: an engine that keeps none (Milvus) reports none rather than a made-up 0
    assert values.get(("semsearch_index_segments", ())) == info.segments and (info.segments is None) == (
        info.generation is not None and fresh.app.state.runtime.engine.describe()["engine"] == "milvus")
    assert values[("semsearch_index_info", (("generation", generation), ("model", info.model)))] == 1


def test_the_service_runs_the_model_without_torch_and_keeps_it_for_ingest_only_with_a_key(seed_index):
    with TestClient(create_app(Settings(index_dir=seed_index))) as search_only:
        runtime = search_only.app.state.runtime
        assert isinstance(runtime.encoder, OnnxEncoder) and runtime.embedder is None
        assert search_only.get("/search", params={"q": "how many casualties"}).status_code == 200
    with TestClient(create_app(Settings(index_dir=seed_index, api_key="s3cret"))) as ingesting:
        runtime = ingesting.app.state.runtime
        assert isinstance(runtime.embedder, OnnxEncoder) and runtime.encoder is runtime.embedder


def test_a_large_index_searches_in_the_thread_pool_with_the_same_answers(seed_index, client):
    query = {"q": "how many casualties", "k": 5, "explain": "true"}
    on_loop = client.get("/search", params=query).json()["results"]
    with TestClient(create_app(Settings(index_dir=seed_index, threaded_search_passages=0))) as threaded:
        assert threaded.get("/search", params=query).json()["results"] == on_loop
        assert threaded.post("/search", json={**query, "explain": True}).json()["results"] == on_loop


def test_a_misnamed_parameter_and_an_unknown_facet_are_named_in_words(client):
    misnamed = client.get("/search", params={"query": "war"}).json()["error"]
    assert misnamed["field"] == "query" and "not a parameter" in misnamed["message"]
    assert {"field": "q", "message": "Field required"} in misnamed["details"]
    facet = client.get("/search", params={"q": "war", "facets": "colour"}).json()["error"]
    assert facet["message"] == "facets: a comma-separated list of outlet, month, section, author, tag, language"


def test_metrics_count_the_engines_calls_by_operation(seed_index):
    """semsearch_engine_calls_total: Milvus's round trips, FAISS's reader operations, per search."""

    def calls_of(client: TestClient, params: dict) -> dict:
        before = metric_values(client.get("/metrics").text)
        assert client.get("/search", params=params).json()["results"]
        after = metric_values(client.get("/metrics").text)
        return {labels: after[(name, labels)] - before.get((name, labels), 0) for name, labels in after
                if name == "semsearch_engine_calls_total" and after[(name, labels)] > before.get((name, labels), 0)}

    def measured() -> tuple[dict, dict]:
        # No watcher looking for new generations meanwhile: only the searches' calls are counted
        with TestClient(create_app(Settings(index_dir=seed_index, reload_interval=3600))) as client:
            client.get("/search", params={"q": "why won't Russia stop"})  # collections loaded
            plain = calls_of(client, {"q": f"why won't Russia stop zq{uuid.uuid4().hex[:8]}", "k": 3,  # a new term
                                      "min_relevance": 0})
            # The page's search: each article once, copies collapsed, facets, newest first
            page = calls_of(client, {"q": "why won't Russia stop", "group": "article", "collapse": "story",
                                     "facets": "outlet,month", "sort": "newest"})
        return plain, page

    def operations(calls: dict) -> dict[str, float]:
        return {dict(labels)["operation"]: n for labels, n in calls.items()}

    # the two lists, the first passages' word pieces (late interaction), then the page's passages
    # with their sentence vectors
    plain_milvus = {"search": 2, "query": 2}
    page_milvus = plain_milvus  # what grouping, collapsing, facets and dates need of every match comes with the lists
    for _ in range(3):  # another thread of this process (another test's server) may call its engine meanwhile
        made, page = measured()
        if {dict(labels)["engine"] for labels in made} == {"faiss"} or \
                (operations(made), operations(page)) == (plain_milvus, page_milvus):
            break
    engine = {dict(labels)["engine"] for labels in made}
    assert len(engine) == 1 and made, made
    if engine == {"faiss"}:  # the searcher's reader operations: both lists, the term weights, the page
        assert {"dense", "keyword", "term_weights", "pieces", "fetch"} <= set(operations(made))
    else:  # round trips; the service keeps every term's statistics (docs/milvus.md: "Round trips")
        assert operations(made) == plain_milvus, made
        assert operations(page) == page_milvus, page


def test_metadata_filters_have_a_cap_of_their_own(client):
    many = client.get("/search", params={"q": "war", "tag": [f"t{n}" for n in range(101)]})
    error = assert_error_shape(many, 422, "invalid_request")
    assert error["field"] == "tag" and "SEMSEARCH_MAX_METADATA_VALUES" in error["message"]
    assert client.get("/search", params={"q": "war", "tag": [f"t{n}" for n in range(100)]}).status_code == 200
