"""Designs beyond one linear scorer over a passage's evidence, measured as bench/scorer.py measures.

    .venv/bin/python bench/designs.py --scifact "$SCIFACT" --json bench/results/designs.json

bench/scorer.py fits a logistic regression over a passage's evidence. This script varies the rest:

1. What the model sees. Every passage of the 28 news articles is embedded in seven views (the
   passage as indexes are built, title and section before the text; its text alone; its section
   and text; the end of the paragraph before it and its text; its text and the start of the
   paragraph after; each of its sentences; each two sentences running) and every question of the
   61 and the news halves is scored against all of them: dense alone, and views combined with the
   keyword share, weights fitted on the news fit half only.
2. How evidence is combined. Cosine, best sentence and keyword weights that depend on the query:
   whether it asks a question (a question word first, or a question mark) and how many terms it
   has; fitted on the training sets as bench/scorer.py fits.
3. One order and a grade from the query's own evidence. Passages ordered by a fitted scorer, the
   relevance a logistic function of that score and of evidence about the whole query (its best
   cosine, its best keyword share, the gap between its first and tenth passage), fitted on SciFact
   train's and the news fit half's answers against the off-topic queries' best hits. Within a query
   the relevance keeps the order; across queries it grades.
4. What the title costs a build: word pieces the model sees per passage with the title and section
   before the text, with the section only and with the text alone (news articles and SciFact).
5. Late interaction: each passage kept as its word pieces' vectors (the model's own token vectors
   from the forward pass that embeds it, the passage's own pieces read in the context of its title
   and section), a query scored against a passage by the mean over the query's pieces of the best
   cosine to any of the passage's (as ColBERT scores, with a model not trained for it); the
   vectors whole (384 numbers), or projected to 128 or 64 numbers, by a PCA fitted on SciFact's
   pieces (the news articles never fit it) or by a random orthogonal basis (seeded: no data fits
   it), in 8 bits. Added to every candidate of bench/scorer.py's
   tables as evidence and fitted as there.

The news test half, the 61 and SciFact test are only measured, never fitted on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import scorer  # noqa: E402
from bench.report import emit  # noqa: E402

VIEWS = ("indexed", "text", "section+text", "before+text", "text+after", "sentence", "two sentences")
VIEW_SETS = (("indexed", "keyword"), ("text", "keyword"), ("indexed", "text", "keyword"),
             ("indexed", "sentence", "keyword"), ("indexed", "two sentences", "keyword"),
             ("indexed", "before+text", "keyword"), ("indexed", "text+after", "keyword"), VIEWS + ("keyword",))
NEIGHBOUR = 300  # characters of the neighbouring paragraph shown with a passage


def view_inputs(passages, spans_of) -> tuple[dict[str, list[str]], dict[str, tuple[list[str], np.ndarray]]]:
    """Each whole-passage view's model inputs, and the pieces (text, owner passage) of the views
    that are the best of several pieces."""
    from indexer.text.chunking import embedding_input

    texts = [p.text for p in passages]
    same_doc = [i > 0 and passages[i - 1].doc_id == p.doc_id for i, p in enumerate(passages)]
    before = [texts[i - 1][-NEIGHBOUR:] if same_doc[i] else "" for i in range(len(passages))]
    after = [texts[i + 1][:NEIGHBOUR] if i + 1 < len(passages) and same_doc[i + 1] else "" for i in range(len(passages))]
    whole = {"indexed": [embedding_input(p)[0] for p in passages], "text": texts,
             "section+text": ["\n".join(x for x in (p.section, p.text) if x) for p in passages],
             "before+text": [f"{b}\n{t}".strip() for b, t in zip(before, texts)],
             "text+after": [f"{t}\n{a}".strip() for t, a in zip(texts, after)]}
    pieces: dict[str, tuple[list[str], list[int]]] = {"sentence": ([], []), "two sentences": ([], [])}
    for i, text in enumerate(texts):
        sentences = [text[a:b] for a, b in spans_of(text)] or [text]
        pieces["sentence"][0].extend(sentences)
        pieces["sentence"][1].extend([i] * len(sentences))
        pairs = [" ".join(sentences[j:j + 2]) for j in range(max(len(sentences) - 1, 1))]
        pieces["two sentences"][0].extend(pairs)
        pieces["two sentences"][1].extend([i] * len(pairs))
    return whole, {name: (t, np.array(owners)) for name, (t, owners) in pieces.items()}


def views(model, tables: dict) -> dict:
    """Paragraph hit@1 / hit@3 of each view and view set on the 61 and the news halves."""
    from sklearn.linear_model import LogisticRegression

    from indexer.eval.questions import read_questions
    from indexer.text.chunking import chunk_document, sentence_spans

    passages = [p for d in scorer.news_documents() for p in chunk_document(d, model.token_spans, model.max_tokens)]
    whole, pieces = view_inputs(passages, sentence_spans)
    vectors = {name: model.embed(texts, progress=False) for name, texts in whole.items()}
    piece_vectors = {name: (model.embed(texts, progress=False), owners) for name, (texts, owners) in pieces.items()}
    keyword_at = scorer.FEATURES.index("keyword") + 3
    paragraph_at = scorer.FEATURES.index("paragraph") + 3

    evidence: dict[str, list[tuple[dict, np.ndarray]]] = {}
    query_vectors: dict[str, list[np.ndarray]] = {}
    for name, path in scorer.NEWS_SETS.items():
        rows = []
        for q, candidates in zip(read_questions(ROOT / path), tables[name]):
            vector = model.embed_query(q.text)
            query_vectors.setdefault(name, []).append(vector)
            found = {}
            for row in candidates:  # the keyword share bench/scorer.py read from the index, by paragraph
                key = (row[1], int(row[paragraph_at]))
                found[key] = max(found.get(key, 0.0), row[keyword_at])
            columns = {name: v @ vector for name, v in vectors.items()}
            for view, (v, owners) in piece_vectors.items():
                best = np.full(len(passages), -1.0)
                np.maximum.at(best, owners, v @ vector)
                columns[view] = best
            columns["keyword"] = np.array([found.get((p.doc_id, p.paragraph), 0.0) for p in passages])
            answers = np.array([p.doc_id in q.doc_ids and any(a in p.text for a in q.answers) for p in passages])
            rows.append((columns, answers))
        evidence[name] = rows

    def figures(score) -> dict:
        result = {}
        for name, rows in evidence.items():
            first = third = 0
            for columns, answers in rows:
                order = np.argsort(-score(columns), kind="stable")
                first += bool(answers[order[0]])
                third += bool(answers[order[:3]].any())
            result[name] = f"{first / len(rows):.3f} / {third / len(rows):.3f}"
        return result

    report: dict = {"passages": len(passages), "dense alone": {v: figures(lambda c, v=v: c[v]) for v in VIEWS}}
    fitted = {}
    for chosen in VIEW_SETS:
        x = np.vstack([np.column_stack([c[v] for v in chosen]) for c, _ in evidence["fit"]])
        y = np.concatenate([a for _, a in evidence["fit"]])
        weight = np.concatenate([np.where(a, 0.5 / max(a.sum(), 1), 0.5 / (len(a) - a.sum())) for _, a in evidence["fit"]])
        model_fit = LogisticRegression(C=1.0, max_iter=3000).fit(x, y, sample_weight=weight * 1000)
        w = model_fit.coef_[0]
        fitted[" + ".join(chosen)] = {"weights": np.round(w, 2).tolist(),
                                      **figures(lambda c, w=w, chosen=chosen: np.column_stack([c[v] for v in chosen]) @ w)}
    report["fitted on the news fit half"] = fitted
    answers = {name: np.array([a for _, a in rows]) for name, rows in evidence.items()}
    report["query adapter fitted on the news fit half"] = {
        str(strength): figures_of(adapted(vectors["indexed"], query_vectors, answers["fit"], strength),
                                  vectors["indexed"], answers)
        for strength in (0.1, 1.0, 10.0)}
    return report


def adapted(passage_vectors: np.ndarray, query_vectors: dict, answers: np.ndarray, strength: float) -> dict:
    """Query vectors moved by a learned linear map (q + qA, renormalised) that raises the fit
    half's answers above every other passage (a softmax over all passages, A held near 0 with an L2
    penalty of this strength); the passages' vectors stay as indexed."""
    import torch

    torch.manual_seed(0)
    passages = torch.tensor(passage_vectors)
    shift = torch.zeros(passages.shape[1], passages.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([shift], lr=1e-3)
    fit, wanted = torch.tensor(np.array(query_vectors["fit"])), torch.tensor(answers)
    for _ in range(300):
        log_p = (torch.nn.functional.normalize(fit + fit @ shift, dim=1) @ passages.T / 0.05).log_softmax(1)
        loss = -torch.logsumexp(log_p.masked_fill(~wanted, -1e9), 1).mean() + strength * (shift ** 2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return {name: torch.nn.functional.normalize(torch.tensor(np.array(v)) @ (torch.eye(len(shift)) + shift),
                                                    dim=1).numpy() for name, v in query_vectors.items()}


def figures_of(query_vectors: dict, passage_vectors: np.ndarray, answers: dict) -> dict:
    """Dense paragraph hit@1 / hit@3 per question set."""
    result = {}
    for name, vectors in query_vectors.items():
        order = np.argsort(-(vectors @ passage_vectors.T), axis=1, kind="stable")
        wanted = answers[name]
        first = wanted[np.arange(len(order)), order[:, 0]].mean()
        third = np.take_along_axis(wanted, order[:, :3], 1).any(1).mean()
        result[name] = f"{first:.3f} / {third:.3f}"
    return result


def asks(text: str) -> float:
    """1 for a question (a question word first, or a question mark at the end), else 0."""
    from indexer.text.keyword import QUESTION_WORDS, TOKEN

    words = TOKEN.findall(text.lower())
    return float(text.rstrip().endswith("?") or bool(words) and (words[0] in QUESTION_WORDS or words[0] in
                                                                  {"why", "is", "are", "was", "will"}))


def query_evidence(tables: dict, scifact: Path):
    """matrix_of for scorer.fit / evaluate: the table's columns, and products with the query's
    kind ("keyword*asks": the keyword share when the query asks a question, else 0; "*terms": times
    the log of its number of terms)."""
    from indexer.text.keyword import Analyzer

    analyzer = Analyzer()
    kinds = {name: [{"asks": asks(text), "terms": float(np.log1p(len(set(analyzer.query_terms(text)))))}
                    for text, _ in queries] for name, queries in scorer.query_sets(scifact).items()}

    def matrix_of(name: str, columns) -> list:
        plain = [c for c in columns if "*" not in c]
        result = []
        for (x, y, docs), kind in zip(scorer.matrix(tables[name], plain), kinds[name]):
            extra = [x[:, plain.index(c.split("*")[0])] * kind[c.split("*")[1]] for c in columns if "*" in c]
            result.append((np.column_stack([x, *extra]) if extra else x, y, docs))
        return result

    return matrix_of


def combined(tables: dict, scifact: Path, floor: float) -> dict:
    """Query-dependent weights (2) and a grade with the query's own evidence (3)."""
    from sklearn.linear_model import LogisticRegression

    matrix_of = query_evidence(tables, scifact)
    report: dict = {}
    orders = {"cosine, keyword": ("cosine", "keyword"),
              "cosine, sentence, keyword": ("cosine", "sentence", "keyword"),
              "+ terms-weighted keyword": ("cosine", "sentence", "keyword", "keyword*terms"),
              "+ weights for questions": ("cosine", "sentence", "keyword", "cosine*asks", "sentence*asks", "keyword*asks"),
              "+ both": ("cosine", "sentence", "keyword", "keyword*terms", "cosine*asks", "sentence*asks", "keyword*asks")}
    for label, columns in orders.items():
        bias, weights = scorer.fit(tables, columns, matrix_of=matrix_of)
        score = lambda x, b=bias, w=weights: scorer.relevance(b, w, x)  # noqa: E731
        report[f"order: {label}"] = {"weights": dict(zip(columns, np.round(weights, 2).tolist())),
                                     **scorer.evaluate(tables, columns, score, floor, scifact, matrix_of)}
        for grade_label, query_level in (("its score", ()), ("+ the query's best cosine", ("best cosine",)),
                                         ("+ best cosine, best keyword, gap", ("best cosine", "best keyword", "gap"))):
            if label not in ("cosine, keyword", "+ weights for questions"):
                continue
            cosine_at, keyword_at = columns.index("cosine"), columns.index("keyword")

            def grade_evidence(x, w=weights, query_level=query_level, cosine_at=cosine_at, keyword_at=keyword_at):
                order_score = x @ w
                ranked = np.sort(order_score)[::-1]
                whole = {"best cosine": x[:, cosine_at].max(), "best keyword": x[:, keyword_at].max(),
                         "gap": ranked[0] - ranked[min(9, len(ranked) - 1)]}
                return np.column_stack([order_score, *[np.full(len(x), whole[q]) for q in query_level]])

            positives, negatives = [], []
            for name in ("scifact_train", "fit"):
                for x, y, _ in matrix_of(name, columns):
                    if len(x):
                        s = x @ weights
                        answer = next((i for i in np.lexsort((np.arange(len(s)), -s))[:10] if y[i]), None)
                        if answer is not None:
                            positives.append(grade_evidence(x)[answer])
            for name in ("off_topic_news", "off_topic_scifact"):
                negatives += [grade_evidence(x)[np.argmax(x @ weights)] for x, _, _ in matrix_of(name, columns) if len(x)]
            calibration = LogisticRegression(class_weight="balanced", C=10.0).fit(
                np.vstack([positives, negatives]), np.r_[np.ones(len(positives)), np.zeros(len(negatives))])
            a, b = calibration.intercept_[0], calibration.coef_[0]
            grade = lambda x, a=a, b=b, g=grade_evidence: 1 / (1 + np.exp(-(a + g(x) @ b)))  # noqa: E731
            report[f"order: {label}; grade: {grade_label}"] = {
                "grade weights": np.round(b, 2).tolist(),
                **scorer.evaluate(tables, columns, score, floor, scifact, matrix_of, grade)}
    return report


def title_tokens(model, scifact: Path) -> dict:
    """Mean word pieces the model sees per passage, by passage input, for the news articles and SciFact."""
    from indexer.eval.beir import read_corpus
    from indexer.text.chunking import chunk_document

    report = {}
    for corpus, documents in (("news", scorer.news_documents()), ("scifact", list(read_corpus(scifact)))):
        passages = [p for d in documents for p in chunk_document(d, model.token_spans, model.max_tokens)]
        counts = {}
        for label, context in (("title+section", lambda p: (p.title, p.section)), ("section", lambda p: ("", p.section)),
                               ("text", lambda p: ("", ""))):
            total = sum(min(model.max_tokens, len(model.token_spans("\n".join(x for x in (*context(p), p.text) if x))) + 2)
                        for p in passages)
            counts[label] = round(total / len(passages), 1)
        report[corpus] = {"passages": len(passages), "word pieces per passage": counts}
    return report


def token_vectors(model, passages) -> list[np.ndarray]:
    """Unit vectors of each passage's own word pieces, from the forward pass over its model input
    (title and section before it), as float16."""
    from indexer.model.pooling import BATCH_SIZE
    from indexer.text.chunking import embedding_input

    inputs = [embedding_input(p) for p in passages]
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0]))
    kept: list[np.ndarray] = [np.zeros((0, model.dimension), np.float16)] * len(inputs)
    for first in range(0, len(order), BATCH_SIZE):
        batch = order[first:first + BATCH_SIZE]
        _, tokens, offsets = model.forward([inputs[i][0] for i in batch])
        for row, i in enumerate(batch):
            own = (offsets[row, :, 1] > offsets[row, :, 0]) & (offsets[row, :, 0] >= inputs[i][1])
            vectors = tokens[row][own]
            kept[i] = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    return kept


def query_tokens(model, text: str) -> np.ndarray:
    _, tokens, offsets = model.forward([text])
    real = offsets[0, :, 1] > offsets[0, :, 0]
    return (tokens[0][real] / np.linalg.norm(tokens[0][real], axis=1, keepdims=True)).astype(np.float32)


def projected(vectors: list[np.ndarray], basis: np.ndarray | None) -> list[np.ndarray]:
    """Vectors projected on basis (rows), unit length again, then rounded to 8 bits a number
    (one scale per vector), as an index would keep them."""
    result = []
    for v in vectors:
        v = v.astype(np.float32) if basis is None else v.astype(np.float32) @ basis.T
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        scale = np.abs(v).max(axis=1, keepdims=True) / 127
        result.append((np.round(v / scale) * scale).astype(np.float32))
    return result


def rescored(x: np.ndarray, depth: int) -> np.ndarray:
    """Columns late, cosine, keyword: the first depth passages by today's shipped relevance, ordered
    by late interaction, above the rest in today's order (an order only, not a grade)."""
    from indexer.search.relevance import RelevanceParams

    shipped = RelevanceParams()
    today = shipped.bias + shipped.cosine_weight * x[:, 1] + shipped.keyword_weight * x[:, 2]
    first = np.argsort(-today, kind="stable")[:depth]
    order = today - 1000.0
    order[first] = 1000.0 + x[first, 0]
    return order


def late_interaction(model, tables: dict, scifact: Path, floor: float) -> dict:
    """Late interaction as evidence beside bench/scorer.py's, at each vector size."""
    from sklearn.decomposition import PCA

    from indexer.eval.beir import read_corpus
    from indexer.text.chunking import chunk_document

    corpora = {"news": scorer.news_documents(), "scifact": list(read_corpus(scifact))}
    passages = {c: [p for d in docs for p in chunk_document(d, model.token_spans, model.max_tokens)]
                for c, docs in corpora.items()}
    tokens = {c: token_vectors(model, ps) for c, ps in passages.items()}
    pieces = {c: float(np.mean([len(t) for t in ts])) for c, ts in tokens.items()}
    sample = np.vstack(tokens["scifact"][::10]).astype(np.float32)
    sets = scorer.query_sets(scifact)
    corpus_of = {name: "news" if name in scorer.NEWS_SETS or name == "off_topic_news" else "scifact" for name in tables}
    paragraph_at = scorer.FEATURES.index("paragraph") + 3
    report: dict = {"word pieces per passage": {c: round(v, 1) for c, v in pieces.items()}}
    for label, size in (("whole (384)", None), ("128", 128), ("128, random basis", 128), ("64", 64)):
        if size is None:
            basis = None
        elif label.endswith("random basis"):
            basis = np.linalg.qr(np.random.default_rng(0).standard_normal((model.dimension, size)))[0].T
        else:
            basis = PCA(size, random_state=0).fit(sample).components_
        kept = {c: projected(ts, basis) for c, ts in tokens.items()}
        where = {c: {} for c in kept}
        for c, ps in passages.items():
            for i, p in enumerate(ps):
                where[c].setdefault((p.doc_id, p.paragraph), []).append(i)
        late = {}
        for name, table in tables.items():
            c = corpus_of[name]
            scores = []
            for (text, _), rows in zip(sets[name], table):
                q = query_tokens(model, text)
                q = q if basis is None else q @ basis.T
                q /= np.linalg.norm(q, axis=1, keepdims=True)

                def best(row, q=q, c=c) -> float:  # a cut paragraph's pieces: the best of them
                    found = where[c].get((row[1], int(row[paragraph_at])), [])
                    return max((float((q @ kept[c][i].T).max(axis=1).mean()) for i in found if len(kept[c][i])),
                               default=0.0)

                scores.append([best(r) for r in rows])
            late[name] = scores

        def matrix_of(name: str, columns, late=late) -> list:
            plain = [c for c in columns if c != "late"]
            result = []
            plain_rows = scorer.matrix(tables[name], plain) if plain else [
                (np.zeros((len(rows), 0)), np.array([r[2] for r in rows], bool), [r[1] for r in rows])
                for rows in tables[name]]
            for (x, y, docs), extra in zip(plain_rows, late[name]):
                column = np.array(extra, dtype=np.float64).reshape(-1, 1)
                result.append((np.hstack([column, x]) if len(x) else np.zeros((0, len(columns))), y, docs))
            return result

        figures = {"bytes per word piece": (model.dimension if size is None else size) + 4}
        for columns in (("late",), ("late", "keyword"), ("late", "cosine", "keyword"),
                        ("late", "cosine", "sentence", "keyword")):
            bias, weights = scorer.fit(tables, columns, matrix_of=matrix_of)
            score = lambda x, b=bias, w=weights: scorer.relevance(b, w, x)  # noqa: E731
            figures[" + ".join(columns)] = {"weights": np.round(weights, 2).tolist(),
                                            **scorer.evaluate(tables, columns, score, floor, scifact, matrix_of)}
        for columns in (("late", "keyword"), ("late", "cosine", "keyword")):
            bias, weights = scorer.fit_shipped_way(tables, columns, matrix_of=matrix_of)
            score = lambda x, b=bias, w=weights: scorer.relevance(b, w, x)  # noqa: E731
            figures[" + ".join(columns) + ", shipped way"] = {
                "weights": np.round(weights, 2).tolist(), **scorer.evaluate(tables, columns, score, floor, scifact, matrix_of)}
        for depth in (30, 50):  # today's relevance order, its first passages rescored by late interaction alone
            figures[f"today's first {depth} rescored by late"] = scorer.evaluate(
                tables, ("late", "cosine", "keyword"), lambda x, depth=depth: rescored(x, depth), floor, scifact, matrix_of)
        report[label] = figures
        print(label, figures, file=sys.stderr, flush=True)
    return report


def main() -> None:
    args = scorer.arguments(__doc__.splitlines()[0]).parse_args()
    model, precision, header = scorer.packaged_model()
    tables = scorer.cached_tables("title+section", model, precision, args.scifact, args.cache)
    report = {**header, "views": views(model, tables), "combined": combined(tables, args.scifact, args.floor),
              "tokens": title_tokens(model, args.scifact),
              "late interaction": late_interaction(model, tables, args.scifact, args.floor)}
    emit(report, args.json)


if __name__ == "__main__":
    main()
