"""A real uvicorn process over HTTP, started by `semsearch serve` on the CI-built index/."""

from __future__ import annotations

import concurrent.futures

import httpx


def test_real_server_answers_over_http(live_server):
    response = httpx.get(live_server + "/search", params={"q": "how many casualties", "k": 3}, timeout=10)
    assert response.status_code == 200
    results = response.json()["results"]
    assert any("over a million casualties" in r["text"] for r in results)
    assert httpx.get(live_server + "/readyz", timeout=5).json()["status"] == "ready"


def test_real_server_handles_concurrent_clients_without_errors(live_server):
    queries = ["why won't Russia stop", "drone production", "NATO membership", "oil revenues"] * 10

    def ask(query: str) -> int:
        return httpx.get(live_server + "/search", params={"q": query, "k": 5}, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        assert set(pool.map(ask, queries)) == {200}


def test_real_server_bad_input_is_a_clear_422_not_a_500(live_server):
    response = httpx.get(live_server + "/search", params={"q": "war", "k": 500}, timeout=5)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "k"
