// The search page: calls GET /search and renders results. Passage text is only ever set as
// textContent, never as HTML, so an article cannot inject markup into the page.
"use strict";

const form = document.getElementById("search-form");
const input = document.getElementById("q");
const mode = document.getElementById("mode");
const statusLine = document.getElementById("status");
const list = document.getElementById("results");

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderPassage(result) {
  // Offsets are into the document; make them relative to the passage to cut out the answer.
  const p = element("p", "passage");
  const from = result.highlight_start - result.start;
  const to = result.highlight_end - result.start;
  p.append(document.createTextNode(result.text.slice(0, from)));
  p.append(element("mark", "answer", result.text.slice(from, to)));
  p.append(document.createTextNode(result.text.slice(to)));
  return p;
}

function renderResult(result) {
  const item = element("li", "result");
  item.append(element("h2", "title", result.title || result.doc_id));
  const meta = element("p", "meta");
  const parts = [result.section, "paragraph " + result.paragraph].filter(Boolean);
  meta.append(parts.join(" · ") + " · ", renderSource(result.source), " · score " + result.score.toFixed(4));
  item.append(meta, renderPassage(result));
  return item;
}

function renderSource(source) {
  // Only web addresses become links (never javascript: or other schemes); files stay text.
  if (!/^https?:\/\//i.test(source)) return document.createTextNode(source);
  const link = element("a", "source", source);
  link.href = source;
  link.rel = "noopener noreferrer";
  return link;
}

let latest = 0; // only the newest search may render: answers can arrive out of order

async function runSearch(query) {
  const ticket = ++latest;
  list.replaceChildren();
  statusLine.textContent = "Searching…";
  const params = new URLSearchParams({ q: query, k: "10", mode: mode.value });
  try {
    const response = await fetch("/search?" + params.toString());
    const body = await response.json();
    if (ticket !== latest) return;
    if (!response.ok) {
      const error = body.error || {};
      statusLine.textContent = (error.message || "Search failed") + (error.fix ? " — fix: " + error.fix : "");
      statusLine.className = "error";
      return;
    }
    statusLine.className = "";
    statusLine.textContent = body.results.length
      ? `${body.results.length} results in ${body.took_ms} ms`
      : "No passage matches that question.";
    list.replaceChildren(...body.results.map(renderResult));
  } catch (err) {
    if (ticket !== latest) return;
    statusLine.className = "error";
    statusLine.textContent = "The service cannot be reached: " + err.message;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = input.value.trim();
  if (!query) return;
  history.replaceState(null, "", "?" + new URLSearchParams({ q: query, mode: mode.value }));
  runSearch(query);
});

const initial = new URLSearchParams(location.search);
if (initial.get("mode")) mode.value = initial.get("mode");
if (initial.get("q")) {
  input.value = initial.get("q");
  runSearch(input.value);
}
