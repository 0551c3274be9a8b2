"""The search page in a real headless Chromium (Debian's chromium package)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from indexer.index.build import build_from_folder
from tests.conftest import start_server, stop_server

CHROMIUM = os.environ.get("SEMSEARCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"no Chromium at {CHROMIUM}: install it with `apt-get install chromium` "
                    "(the setup step does) or set SEMSEARCH_CHROMIUM")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_typing_a_query_shows_results_with_the_answer_marked(browser, live_server):
    page = browser.new_page()
    console_errors = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    response = page.goto(live_server + "/")
    headers = response.headers
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    page.fill("#q", "how many casualties")
    page.press("#q", "Enter")
    page.wait_for_selector("li.result mark.answer", timeout=15000)
    results = page.locator("li.result")
    assert "over a million casualties" in results.first.inner_text()  # the one passage that answers
    assert "casualties" in page.locator("li.result mark.answer").first.inner_text()
    assert "The Costs and Risks Ahead" in results.first.locator(".where").first.inner_text()
    assert results.first.locator("a").count() == 0  # a file source is text, not a link
    assert "?q=how+many+casualties" in page.url  # the search can be shared as a link
    assert console_errors == []  # the page satisfies its own Content-Security-Policy
    page.close()


def test_no_good_match_and_weak_matches_are_said_in_words(browser, live_server):
    page = browser.new_page()
    page.goto(live_server + "/?q=flibbertigibbet+zorkmid+quux")
    page.locator("#status", has_text="No good match").wait_for(timeout=15000)
    assert page.locator("li.result").count() == 0 and "fewer or other words" in page.inner_text("#status")
    page.goto(live_server + "/?q=flibbertigibbet+zorkmid+quux&published_after=2020-01-01")
    page.locator("#status", has_text="drop a filter").wait_for(timeout=15000)
    # on the seed index: the answer, a weak match at every precision (fp32 0.29, int8-static 0.31)
    page.goto(live_server + "/?q=how+many+soldiers+were+killed")
    page.locator("li.result.weak .grade", has_text="weak match").wait_for(timeout=15000)
    assert "no strong match" in page.inner_text("#status")
    page.close()


def test_api_docs_render_with_no_request_leaving_the_server(browser, live_server):
    page = browser.new_page()
    console_errors, elsewhere = [], []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)

    def only_this_server(route):
        if route.request.url.startswith(live_server) or route.request.url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(live_server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20000)
    assert "/search" in page.content()  # the operations are listed
    assert elsewhere == [] and console_errors == []
    page.close()


PLACEHOLDER_FITS = """() => {
  const input = document.getElementById("q");
  const style = getComputedStyle(input);
  const context = document.createElement("canvas").getContext("2d");
  context.font = `${style.fontSize} ${style.fontFamily}`;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return context.measureText(input.placeholder).width <= room;
}"""


@pytest.mark.parametrize("width", [360, 1280])
def test_the_layout_uses_the_screen_it_has(browser, live_server, width):
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.goto(live_server + "/?q=why+won%27t+Russia+stop")
    page.wait_for_selector("li.result mark.answer", timeout=15000)
    for selector in ("#q", "#mode", "button[type=submit]", "li.result"):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, selector
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    assert page.evaluate(PLACEHOLDER_FITS)  # the example question is not cut off
    if width >= 1280:  # a desktop: the results take most of the width, not a narrow column
        assert page.locator("#results").bounding_box()["width"] >= 700
    else:  # stacked on a phone, the two date boxes line up
        assert page.locator("#after").bounding_box()["x"] == page.locator("#before").bounding_box()["x"]
    page.close()


def test_the_page_shows_the_relevance_and_order_the_api_gives(browser, live_server):
    import httpx

    query = "why won't Russia stop"
    body = httpx.get(live_server + "/search", params={"q": query, "group": "article", "collapse": "story", "k": 10,
                                                   "mode": "hybrid"}).json()  # as the page asks
    said = [f"relevance {r['relevance']:.2f}" for result in body["results"] for r in [result, *result.get("more", [])]]
    page = browser.new_page()
    page.goto(live_server + "/?q=why+won%27t+Russia+stop")
    page.wait_for_selector("li.result mark.answer", timeout=15000)
    shown = re.findall(r"relevance \d\.\d\d", page.inner_text("#results"))
    assert shown == said
    page.close()


def test_each_article_once_with_its_matching_passages_and_answers_that_stand_out(browser, live_server):
    page = browser.new_page()
    page.goto(live_server + "/?q=why+won%27t+Russia+stop")
    page.wait_for_selector("li.result mark.answer", timeout=15000)
    results = page.locator("li.result")
    assert results.count() == page.locator("li.result h2.title").count()  # the headline once per article
    assert 1 <= results.first.locator("p.passage").count() <= 3
    passages = page.locator("p.passage")
    for i in range(passages.count()):  # an answer that is the whole passage gets the rule as well
        whole = passages.nth(i).inner_text().strip() == passages.nth(i).locator("mark.answer").inner_text().strip()
        assert ("whole" in passages.nth(i).get_attribute("class")) == whole
    page.close()


def test_an_error_is_shown_to_the_user(browser, live_server):
    page = browser.new_page()
    page.goto(live_server + "/?q=" + "x" * 1001)
    page.wait_for_selector("#status.error")
    assert "1000" in page.inner_text("#status")
    page.close()


def test_passage_text_is_inserted_as_text_never_as_html(browser, tmp_path, embedder):
    hostile = "<img src=x onerror=\"window.pwned=1\"> The <b>council</b> approved the harbour budget."
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "feed.jsonl").write_text(json.dumps({"id": "h1", "title": "<i>Harbour</i> Budget",
                                                  "url": "https://example.org/h1", "text": hostile}) + "\n" +
                                      json.dumps({"id": "h2", "title": "Harbour Vote", "url": "javascript:window.pwned=2",
                                                  "text": "The harbour budget vote was delayed again."}))
    build_from_folder(seeds, tmp_path / "index", embedder, progress=False)
    process, url = start_server(tmp_path / "index")
    try:
        page = browser.new_page()
        page.goto(url + "/?q=harbour+budget")
        page.locator("li.result").nth(1).wait_for()  # no page-side polling: the page's policy forbids eval
        assert page.locator("li.result").count() == 2
        assert page.locator("li.result img, li.result b, li.result i").count() == 0
        assert "<b>council</b>" in page.inner_text("#results")
        assert page.evaluate("window.pwned") is None
        links = page.locator("li.result a")
        assert [links.nth(i).get_attribute("href") for i in range(links.count())] == ["https://example.org/h1"]
        assert "javascript:window.pwned=2" in page.inner_text("#results")  # shown as text, not a link
        page.close()
    finally:
        stop_server(process)


@contextmanager
def archive_site(browser, tmp_path):
    """A server on the dated archive (tests/test_metadata.py, stand-in model), a page on it, and
    the console errors that page logs."""
    from tests.conftest import STAND_IN
    from tests.conftest import archive_index

    process, url = start_server(archive_index(tmp_path), STAND_IN)
    try:
        page = browser.new_page()
        console_errors: list[str] = []
        page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
        yield page, url, console_errors
    finally:
        stop_server(process)


def test_dates_outlets_and_facet_links_narrow_the_search_and_stay_in_the_address(browser, tmp_path):
    with archive_site(browser, tmp_path) as (page, url, console_errors):
        page.goto(url + "/?q=harbour+port+workers&mode=dense")  # dense: every article above the facet floor
        page.locator("li.result").nth(5).wait_for()
        assert "Wire Daily · 2026-03-05" in page.inner_text("#results")  # outlet and date on each result
        page.locator("#facets a", has_text=re.compile(r"^Wire Daily \(\d+\)$")).click()  # an outlet facet link
        page.wait_for_url("**outlet=Wire+Daily**")
        page.locator("#filters", has_text="outlet: Wire Daily").wait_for()
        page.locator("li.result").nth(1).wait_for()
        assert page.locator("li.result").count() == 2
        assert all("Wire Daily" in page.locator("li.result .meta").nth(i).inner_text() for i in range(2))
        page.fill("#after", "2026-03-05")  # the date range control (inclusive days)
        page.locator("#after").dispatch_event("change")
        page.wait_for_url("**published_after=2026-03-05**")
        page.locator("#status", has_text="1 article in").wait_for()
        shared = page.url
        page.close()

        again = browser.new_page()  # the address is the whole search: opened anew, the same answer
        again.goto(shared + "&language=en")  # filters the page has no control for still apply
        again.wait_for_url("**language=en**")
        again.locator("#status", has_text="1 article in").wait_for()
        assert again.input_value("#after") == "2026-03-05" and "item a3" not in again.inner_text("#results")
        assert "Harbour report a2" in again.inner_text("#results")
        again.locator("#filters a").click()  # drop the outlet filter
        again.wait_for_url(lambda address: "outlet=" not in address)
        again.locator("#facets a", has_text="2026-03").click()  # a month facet link sets the date range
        again.wait_for_url("**published_before=2026-03-31**")
        assert again.input_value("#after") == "2026-03-01"
        again.close()
        assert console_errors == []


def test_the_page_offers_its_search_to_browsers_and_each_search_as_a_feed(browser, tmp_path):
    import feedparser

    with archive_site(browser, tmp_path) as (page, url, console_errors):
        page.goto(url + "/")
        described = page.locator('link[rel="search"]')
        assert described.get_attribute("type") == "application/opensearchdescription+xml"
        description = page.request.get(url + described.get_attribute("href"))
        assert description.ok and "search.atom?q={searchTerms}" in description.text()
        assert not page.locator("a#follow").is_visible()  # nothing to follow before a search
        page.fill("#q", "harbour port workers")
        page.press("#q", "Enter")
        page.locator("li.result").first.wait_for()
        follow = page.locator("a#follow")
        assert follow.is_visible() and follow.inner_text() == "Follow this search"
        alternate = page.locator('link[rel="alternate"][type="application/atom+xml"]')
        assert alternate.get_attribute("href") == follow.get_attribute("href")
        assert "q=harbour+port+workers" in follow.get_attribute("href")
        feed = page.request.get(url + follow.get_attribute("href"))
        parsed = feedparser.parse(feed.body())
        assert feed.ok and not parsed.bozo and parsed.feed.title == "semsearch: harbour port workers"
        shown = {t.strip() for t in page.locator("li.result .title").all_inner_texts()}
        assert {e.title for e in parsed.entries} <= shown  # dated matches, as the page shows them
        page.fill("#after", "2026-03-05")  # a narrower search: a feed of its own
        page.locator("#after").dispatch_event("change")
        page.wait_for_url("**published_after=2026-03-05**")
        page.wait_for_function("document.querySelector('a#follow').href.includes('published_after=2026-03-05')")
        narrowed = feedparser.parse(page.request.get(url + page.locator("a#follow").get_attribute("href")).body())
        assert {e.title for e in narrowed.entries} == {"Harbour report a1", "Harbour report a2", "Harbour report a6"}
        assert console_errors == []


def test_a_syndicated_story_shows_once_and_says_where_else_it_ran(browser, tmp_path):
    from tests.conftest import STAND_IN
    from tests.conftest import semsearch
    from tests.conftest import STORIES

    seeds = tmp_path / "feed"
    seeds.mkdir()
    (seeds / "feed.jsonl").write_text("".join(json.dumps({"id": i, "title": "Grain deal", "text": text, "outlet": o})
                                              + "\n" for i, o, text in STORIES), encoding="utf-8")
    assert semsearch("index", str(seeds), "--out", str(tmp_path / "index"), env=STAND_IN).returncode == 0
    process, url = start_server(tmp_path / "index", STAND_IN)
    try:
        page = browser.new_page()
        page.goto(url + "/?q=grain+corridor+deal+extended")
        page.locator("li.result .also").first.wait_for()
        also = page.locator("li.result .also")
        assert also.count() == 1 and also.first.inner_text().startswith("also in 2 outlets: ")
        shown = page.inner_text("#results")
        assert sum(shown.count(o) for o in ("Wire Daily ·", "Harbour Times ·", "Coast Gazette ·")) == 1
        page.close()
    finally:
        stop_server(process)


def test_a_timeline_of_matches_per_month_narrows_the_search_to_a_month(browser, tmp_path):
    with archive_site(browser, tmp_path) as (page, url, console_errors):
        page.goto(url + "/?q=harbour+port+workers")
        page.locator("#timeline svg a").first.wait_for(timeout=15000)
        bars = page.locator("#timeline svg a")
        labels = [bars.nth(i).get_attribute("aria-label") for i in range(bars.count())]
        assert labels[0].startswith("2026-02: 1 article;") and labels[-1].startswith("2026-03: ")  # oldest first
        assert page.locator("#timeline svg").get_attribute("aria-label") == "Matching articles per month"
        bars.first.click()  # the February bar
        page.wait_for_url("**published_before=2026-02-28**")
        assert "published_after=2026-02-01" in page.url
        page.locator("#status", has_text="1 article in").wait_for()
        assert page.locator("#timeline svg a").count() == 1
        assert console_errors == []  # drawn by the page's own code, within its Content-Security-Policy
        page.close()


def test_a_relevance_not_fitted_for_the_model_is_said_until_calibrated(browser, faiss_folder_index, tmp_path):
    """The stand-in encoder has no shipped weights: /readyz, the log and the page say so, every hit
    is kept; `semsearch calibrate` fits them into the index folder and the running service takes
    them up by itself."""
    import httpx

    from tests.conftest import STAND_IN
    from tests.conftest import semsearch

    _, index = faiss_folder_index
    process, url = start_server(index, env=STAND_IN)
    try:
        relevance = httpx.get(url + "/readyz").json()["relevance"]
        assert relevance["fitted"] is False and relevance["floor"] == 0 and "semsearch calibrate" in relevance["notice"]
        page = browser.new_page()
        page.goto(url + "/")
        page.locator("#notice", has_text="not fitted").wait_for(timeout=15000)
        unfitted = httpx.get(url + "/search", params={"q": "zorkmid quux flibbertigibbet"}).json()
        assert unfitted["results"] and unfitted["no_good_match"] is False
        questions, off_topic = tmp_path / "questions.jsonl", tmp_path / "off_topic.txt"
        questions.write_text('{"question": "when did the harbour reopen", "doc_id": "harbour", "answers": ["reopened"]}\n'
                             '{"question": "what will the new dam power", "doc_id": "dam", "answers": ["the valley"]}\n')
        off_topic.write_text("zorkmid quux flibbertigibbet\nchocolate cake recipe\nbest running shoes\n")
        done = semsearch("calibrate", str(questions), "--off-topic", str(off_topic), "--index", str(index), env=STAND_IN)
        assert done.returncode == 0, done.stderr
        assert "fitted on 2 of 2 questions" in done.stdout and (index / "relevance.json").is_file()
        assert "late interaction for a question: weights kept, too few to fit (2 answered questions" in done.stdout
        deadline = time.monotonic() + 20
        while not (relevance := httpx.get(url + "/readyz").json()["relevance"])["fitted"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert relevance["weights"] == str(index / "relevance.json") and "notice" not in relevance
        assert httpx.get(url + "/search", params={"q": "zorkmid quux flibbertigibbet"}).json()["no_good_match"] is True
        assert httpx.get(url + "/search", params={"q": "when did the harbour reopen"}).json()["results"]
        page.reload()
        page.locator("#q").wait_for(timeout=15000)
        page.wait_for_timeout(500)  # the notice would show once /readyz answers
        assert page.locator("#notice").is_hidden()
        page.close()
        assert "relevance is not fitted for the model" in Path(process.log_path).read_text()
    finally:
        stop_server(process)
