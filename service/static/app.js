// The search page: calls GET /search and renders results. Passage text is only ever set as
// textContent, never as HTML, so an article cannot inject markup into the page.
"use strict";

const form = document.getElementById("search-form");
const input = document.getElementById("q");
const mode = document.getElementById("mode");
const statusLine = document.getElementById("status");
const list = document.getElementById("results");
const after = document.getElementById("after");
const before = document.getElementById("before");
const filtersLine = document.getElementById("filters");
const facetsPanel = document.getElementById("facets");
const timeline = document.getElementById("timeline");
const notice = document.getElementById("notice");
const follow = document.getElementById("follow");
const SVG = "http://www.w3.org/2000/svg";
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
let outlets = []; // outlets chosen from the facet links (or a shared link)
// Other filters and orders a shared link may carry (the API's names), kept as they came.
const PASSED_ON = ["author", "language", "tag", "sort", "recency_half_life_days"];
let passedOn = [];

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderPassage(result) {
  // Offsets are into the document; make them relative to the passage to cut out the answer.
  const from = result.highlight_start - result.start;
  const to = result.highlight_end - result.start;
  // An answer that is the whole passage gets a rule beside it too: all yellow would not stand out.
  const p = element("p", from <= 0 && to >= result.text.length ? "passage whole" : "passage");
  p.append(document.createTextNode(result.text.slice(0, from)));
  p.append(element("mark", "answer", result.text.slice(from, to)));
  p.append(document.createTextNode(result.text.slice(to)));
  return p;
}

function renderWhere(result) {
  // Where in the article a passage is, and how well it matches.
  const where = element("p", "where");
  if (result.match === "weak") where.append(element("span", "grade", "weak match"), " · ");
  where.append([result.section, "paragraph " + result.paragraph].filter(Boolean).join(" · ") +
               " · relevance " + result.relevance.toFixed(2));
  return where;
}

function renderResult(result) {
  // One article: its headline once, outlet, date and source beside it, then its best passage and
  // the further passages that also match (group=article).
  const item = element("li", result.match === "weak" ? "result weak" : "result");
  item.append(element("h2", "title", result.title || result.doc_id));
  const meta = element("p", "meta");
  const published = result.published_at ? result.published_at.slice(0, 10) : "";
  const parts = [result.outlet, published].filter(Boolean);
  meta.append(parts.length ? parts.join(" · ") + " · " : "", renderSource(result.source));
  item.append(meta, renderWhere(result), renderPassage(result));
  for (const other of result.more || []) item.append(renderWhere(other), renderPassage(other));
  const copies = result.also_in || [];
  if (copies.length) {
    // Syndicated copies of the same story, shown once: name where else it ran.
    const names = copies.map((c) => c.outlet || c.source);
    const outlets = new Set(names);
    item.append(element("p", "also", `also in ${outlets.size} ${outlets.size === 1 ? "outlet" : "outlets"}: ` +
                        [...outlets].join(", ")));
  }
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

function state() {
  // Everything a search depends on, as the page's address keeps it: a search is a link to share.
  const params = new URLSearchParams({ q: input.value.trim(), mode: mode.value });
  if (after.value) params.set("published_after", after.value);
  if (before.value) params.set("published_before", before.value); // a date: up to its end
  for (const outlet of outlets) params.append("outlet", outlet);
  for (const [name, value] of passedOn) params.append(name, value);
  return params;
}

function go() {
  const params = state();
  if (!params.get("q")) return;
  history.replaceState(null, "", "?" + params.toString());
  runSearch(params);
}

function facetLink(text, title, onClick) {
  const link = element("a", "facet", text);
  link.href = "#";
  link.title = title;
  link.addEventListener("click", (event) => {
    event.preventDefault();
    onClick();
    go();
  });
  return link;
}

function renderFacets(facets) {
  const blocks = [];
  const outletValues = (facets.outlet || []).filter((f) => !outlets.includes(f.value));
  if (outletValues.length) {
    blocks.push(element("h3", "", "Outlet"));
    const items = element("ul");
    for (const f of outletValues) {
      const item = element("li");
      item.append(facetLink(`${f.value} (${f.count})`, "only " + f.value, () => outlets.push(f.value)));
      items.append(item);
    }
    blocks.push(items);
  }
  if ((facets.month || []).length) {
    blocks.push(element("h3", "", "Month"));
    const items = element("ul");
    for (const f of facets.month) {
      const item = element("li");
      item.append(facetLink(`${f.value} (${f.count})`, "only " + f.value, () => onlyMonth(f.value)));
      items.append(item);
    }
    blocks.push(items);
  }
  facetsPanel.replaceChildren(...blocks);
}

function onlyMonth(value) {
  // Narrow the date range to one month ("2026-03"), first to last day.
  const [year, month] = value.split("-").map(Number);
  after.value = value + "-01";
  before.value = new Date(Date.UTC(year, month, 0)).toISOString().slice(0, 10);
}

function svgElement(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function renderTimeline(months) {
  // Matching articles per month over all matches (the month facet), oldest to newest, months
  // without a match drawn empty; each bar is a link that narrows the search to its month.
  const counts = new Map((months || []).filter((f) => /^\d{4}-\d{2}$/.test(f.value)).map((f) => [f.value, f.count]));
  if (!counts.size) {
    timeline.replaceChildren();
    return;
  }
  const known = [...counts.keys()].sort();
  const bars = [];
  let [year, month] = known[0].split("-").map(Number);
  while (bars.length < 240) {
    const value = `${year}-${String(month).padStart(2, "0")}`;
    bars.push({ value, count: counts.get(value) || 0 });
    if (value >= known[known.length - 1]) break;
    [year, month] = month === 12 ? [year + 1, 1] : [year, month + 1];
  }
  const width = 34, height = 44, top = Math.max(...bars.map((b) => b.count));
  const svg = svgElement("svg", { viewBox: `0 0 ${bars.length * width} ${height + 26}`, role: "group",
                                  "aria-label": "Matching articles per month" });
  svg.style.width = `${Math.min(bars.length * width, 720)}px`;
  bars.forEach((bar, i) => {
    const tall = bar.count ? Math.max(3, Math.round((height * bar.count) / top)) : 1;
    const rect = svgElement("rect", { x: i * width + 3, y: height - tall, width: width - 6, height: tall });
    const articles = bar.count === 1 ? "1 article" : `${bar.count} articles`;
    if (bar.count) {
      const link = svgElement("a", { href: "#", "aria-label": `${bar.value}: ${articles}; show only this month` });
      const title = svgElement("title", {});
      title.textContent = `${bar.value}: ${articles}`;
      rect.append(title);
      link.append(rect);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        onlyMonth(bar.value);
        go();
      });
      svg.append(link);
    } else {
      rect.setAttribute("class", "empty");
      svg.append(rect);
    }
    // Under the bars: each month's name (every third when there are many), the year at its first.
    const [y, m] = bar.value.split("-").map(Number);
    const center = i * width + width / 2;
    if (bars.length <= 18 || m % 3 === 1) {
      const name = svgElement("text", { x: center, y: height + 11, "text-anchor": "middle" });
      name.textContent = MONTHS[m - 1];
      svg.append(name);
    }
    if (i === 0 || m === 1) {
      const label = svgElement("text", { x: center, y: height + 23, "text-anchor": "middle" });
      label.textContent = String(y);
      svg.append(label);
    }
  });
  timeline.replaceChildren(svg);
}

function renderFilters() {
  // The outlets chosen so far, each with a link that drops it.
  const parts = [];
  for (const outlet of outlets) {
    if (parts.length) parts.push(document.createTextNode(" "));
    parts.push(document.createTextNode("outlet: " + outlet + " "),
               facetLink("×", "drop this outlet", () => { outlets = outlets.filter((o) => o !== outlet); }));
  }
  filtersLine.replaceChildren(...parts);
}

function statusText(body, params) {
  // Say so in words when the index holds no good answer, and what to try instead.
  const filtered = ["published_after", "published_before", "outlet", ...PASSED_ON].some((name) => params.has(name));
  if (body.no_good_match) {
    return "No good match: nothing here answers that well. Try fewer or other words" +
      (filtered ? ", or drop a filter (dates, outlet)." : ".");
  }
  if (!body.results.length) return "No more results.";
  const weak = body.results.every((r) => r.match === "weak");
  const articles = body.results.length === 1 ? "1 article" : `${body.results.length} articles`;
  return `${articles} in ${body.took_ms} ms` +
    (weak ? " — no strong match: these articles are only loosely related." : "");
}

let latest = 0; // only the newest search may render: answers can arrive out of order

function offerFeed(state) {
  // The search as an Atom feed: for feed readers (the head's alternate link) and for people (a link).
  const address = "/search.atom?" + new URLSearchParams(state).toString();
  let alternate = document.querySelector('link[rel="alternate"][type="application/atom+xml"]');
  if (!alternate) {
    alternate = document.createElement("link");
    alternate.rel = "alternate";
    alternate.type = "application/atom+xml";
    document.head.append(alternate);
  }
  alternate.href = address;
  alternate.title = "semsearch: " + state.get("q");
  follow.href = address;
  follow.parentElement.hidden = false;
}

async function runSearch(state) {
  const ticket = ++latest;
  offerFeed(state);
  list.replaceChildren();
  timeline.replaceChildren();
  renderFilters();
  statusLine.textContent = "Searching…";
  const params = new URLSearchParams(state);
  params.set("k", "10");
  params.set("facets", "outlet,month");
  params.set("collapse", "story");
  params.set("group", "article");
  try {
    const response = await fetch("/search?" + params.toString());
    const body = await response.json();
    if (ticket !== latest) return;
    if (!response.ok) {
      const error = body.error || {};
      statusLine.textContent = (error.message || "Search failed") + (error.fix ? " — fix: " + error.fix : "");
      statusLine.className = "error";
      facetsPanel.replaceChildren();
      timeline.replaceChildren();
      return;
    }
    statusLine.className = "";
    statusLine.textContent = statusText(body, params);
    list.replaceChildren(...body.results.map(renderResult));
    renderFacets(body.facets || {});
    renderTimeline((body.facets || {}).month);
  } catch (err) {
    if (ticket !== latest) return;
    statusLine.className = "error";
    statusLine.textContent = "The service cannot be reached: " + err.message;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  go();
});
for (const control of [after, before]) control.addEventListener("change", go);

// What the reader should know about every answer: a relevance not fitted for the model grades nothing.
fetch("/readyz").then((response) => response.json()).then((body) => {
  if (body.relevance && !body.relevance.fitted) {
    notice.textContent = "Relevance is not fitted for this model: every result is shown, however weak, " +
      "and \u201cno good match\u201d is never said. Run `semsearch calibrate` to fit it.";
    notice.hidden = false;
  }
}).catch(() => {});

const initial = new URLSearchParams(location.search);
if (initial.get("mode")) mode.value = initial.get("mode");
after.value = initial.get("published_after") || "";
before.value = initial.get("published_before") || "";
outlets = initial.getAll("outlet");
passedOn = [...initial.entries()].filter(([name]) => PASSED_ON.includes(name));
if (initial.get("q")) {
  input.value = initial.get("q");
  go();
}
