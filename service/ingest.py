"""Ingest over HTTP: add and delete documents (API key protected), and force an index reload.

(No `from __future__ import annotations` here: the POST body model is made per app from the
settings, and FastAPI must see it as a class, not as a name to resolve.)
"""

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from indexer.errors import WriteBusy
from indexer.index.build import UnknownDocument, update_documents
from indexer.text.documents import Document
from indexer.text.metadata import ALIASES, MAX_ITEMS, TIMES, Metadata, from_fields, parse_utc
from indexer.settings import Settings
from service.errors import ApiError
from service.guard import key_problem
from service.runtime import Runtime
from service.schemas import TOO_LARGE, WHITESPACE, DocumentList, DocumentOut, ErrorResponse

log = logging.getLogger("semsearch.ingest")
router = APIRouter()
bearer = HTTPBearer(auto_error=False)
TEXT_PATTERN = f"^[^\\x00]*[^\\x00{WHITESPACE}][^\\x00]*$"  # some text besides whitespace, and no NUL
NO_NUL = r"^[^\x00]*$"  # NUL is refused everywhere, as files holding it and queries are
AUTH_ERRORS = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
WRITE_ERRORS = {**AUTH_ERRORS, 503: {"model": ErrorResponse, "description": "the change could not be written "
                                     "(a full disk, for example; write_busy: another replica's write held the "
                                     "index too long, with Retry-After) and nothing was changed"}}


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(..., min_length=1, max_length=200, pattern=rf"^[^/\x00{WHITESPACE}]+$",
                    description="your id for the article (no whitespace or '/')")
    title: str = Field("", max_length=1000, pattern=NO_NUL)
    url: str | None = Field(None, max_length=2000, pattern=NO_NUL, description="where the article lives; shown as "
                            "its source")
    text: str = Field(..., min_length=1, json_schema_extra={"pattern": TEXT_PATTERN})
    published_at: str | None = Field(None, max_length=100, pattern=NO_NUL, description="ISO 8601 date or date-time "
                                     "(a time without a zone is UTC); one that cannot be read is left out with a "
                                     "warning")
    updated_at: str | None = Field(None, max_length=100, pattern=NO_NUL, description="as published_at")
    authors: list[Annotated[str, Field(max_length=200, pattern=NO_NUL)]] = Field(default_factory=list,
                                                                                max_length=MAX_ITEMS)
    outlet: str | None = Field(None, max_length=200, pattern=NO_NUL, description="the site or publication")
    language: str | None = Field(None, max_length=35, pattern=NO_NUL, description="e.g. en, en-GB")
    tags: list[Annotated[str, Field(max_length=200, pattern=NO_NUL)]] = Field(default_factory=list,
                                                                             max_length=MAX_ITEMS)

    def metadata(self) -> tuple[Metadata, list[str]]:
        """The article's metadata, and a warning for each time that cannot be read."""
        found = from_fields({name: getattr(self, name) for name in ALIASES}, f"POST /documents {self.id}")
        warnings = [f"document {self.id}: {name} {getattr(self, name)!r} {parse_utc(getattr(self, name))[1]}; "
                    "stored without it" for name in TIMES if getattr(self, name) and getattr(found, name) is None]
        return found, warnings

    @field_validator("text")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters (\\u0000)")
        if not re.search(f"[^{WHITESPACE}]", value):
            raise ValueError("text must not be empty")
        return value


def ingest_request(settings: Settings) -> type[BaseModel]:
    """The POST /documents body with this service's limits (so the OpenAPI spec states them):
    at most SEMSEARCH_MAX_DOCUMENT_CHARS a text and SEMSEARCH_MAX_DOCUMENTS_PER_CALL documents."""
    document = create_model("DocumentIn", __base__=DocumentIn,
                            text=(str, Field(..., min_length=1, max_length=settings.max_document_chars,
                                             json_schema_extra={"pattern": TEXT_PATTERN})))
    return create_model("IngestRequest", documents=(
        list[document], Field(..., min_length=1, max_length=settings.max_documents_per_call)))


class IngestResponse(BaseModel):
    accepted: list[str] = Field(description="document ids now stored durably (in the index itself)")
    deleted: list[str] = Field(default_factory=list)
    generation: str | None = Field(description="index generation that serves them")
    searchable: bool = Field(description="true: the change is searchable now that the call has returned")
    embedded: int = Field(description="passages that had to be embedded")
    warnings: list[str] = Field(default_factory=list, description="metadata left out (a date that cannot be read)")


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def require_key(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Runtime:
    """The key check, also done by service/guard.py before the body is read; here it documents the
    security scheme in the OpenAPI spec and guards any route the guard's paths miss."""
    runtime = runtime_of(request)
    given = f"Bearer {credentials.credentials}" if credentials else ""
    problem = key_problem(runtime.settings, given)
    if problem is not None:
        raise problem
    if runtime.embedder is None:
        raise runtime.problem
    return runtime


AuthorizedRuntime = Annotated[Runtime, Depends(require_key)]


def publish(runtime: Runtime, upserts: list[Document], deletes: list[str]) -> tuple[int, bool]:
    """Write the change as one new small segment (embedding only its passages), switch the service
    to it, and let the background merger tidy up; returns the passages embedded and whether the
    service now serves the change.

    All or nothing: the index is the documents' only store and publishing its generation is the
    one commit, so a write that fails (a full disk, say) answers 503 having changed nothing.
    """
    try:
        name, embedded = update_documents(runtime.settings.index_dir, runtime.embedder, upserts, deletes,
                                          runtime.engine, deletable="api")
    except WriteBusy as exc:  # another replica's write held the index past the wait: the same call succeeds later
        log.warning("write refused, nothing changed: %s", exc)
        raise ApiError(503, "write_busy", f"{exc}; send the same request again", {"Retry-After": "5"})
    except OSError as exc:  # the OS's (a full disk) or the engine's WriteFailed
        log.error("write failed, nothing changed: %s", exc)
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ApiError(503, "write_failed", f"the change could not be written and nothing was changed: {reason}")
    try:
        runtime.reload()
    except Exception:  # committed all the same: the watcher switches to it on its next look
        log.exception("ingest committed as %s but switching to it failed; the watcher retries", name)
    runtime.merge_wanted.set()
    return embedded, runtime.generation == name


def refuse_repeated_ids(ids: list[str]) -> None:
    """One live document per id: a request naming an id twice is a 422 naming the second, never two copies."""
    first: dict[str, int] = {}
    for position, doc_id in enumerate(ids):
        if doc_id in first:
            raise RequestValidationError([{
                "type": "value_error", "loc": ("body", "documents", position, "id"), "input": doc_id,
                "msg": f"id {doc_id!r} is already given by documents.{first[doc_id]}; one document per id"}])
        first[doc_id] = position


def documents_router(settings: Settings) -> APIRouter:
    """POST /documents, its body limited by the settings."""
    adding = APIRouter()
    IngestRequest = ingest_request(settings)  # noqa: N806 (a model class)

    @adding.post("/documents", response_model=IngestResponse, responses={**WRITE_ERRORS, **TOO_LARGE},
                  summary="Add or replace documents")
    def add_documents(body: IngestRequest, runtime: AuthorizedRuntime) -> IngestResponse:
        refuse_repeated_ids([d.id for d in body.documents])
        documents, warnings = [], []
        for d in body.documents:
            metadata, problems = d.metadata()
            warnings += problems
            documents.append(Document(doc_id=d.id, title=d.title.strip(), source=d.url or f"api:{d.id}",
                                      text=d.text.replace("\r\n", "\n"), metadata=metadata))
        embedded, searchable = publish(runtime, documents, [])
        log.info("ingested %d documents into %s", len(documents), runtime.generation)
        return IngestResponse(accepted=[d.doc_id for d in documents], generation=runtime.generation,
                              searchable=searchable, embedded=embedded, warnings=warnings)

    return adding


def serving(runtime: Runtime):
    """The index snapshot being served (503 with the fix while there is none)."""
    if runtime.searcher is None:
        raise runtime.problem
    return runtime.searcher.index


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses={**AUTH_ERRORS, 404: {"model": ErrorResponse}},
            summary="A stored document: its text as kept and its passages")
def get_document(doc_id: str, runtime: AuthorizedRuntime) -> dict:
    kept = serving(runtime).document(doc_id)
    if kept is None:
        raise ApiError(404, "not_found", f"no document with id {doc_id!r} in the index")
    return kept.record()


@router.get("/documents", response_model=DocumentList, responses=AUTH_ERRORS, summary="The stored documents, a page at a time")
def list_documents(runtime: AuthorizedRuntime, offset: Annotated[int, Query(ge=0)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    total, page = serving(runtime).document_ids(offset, limit)
    return {"total": total, "offset": offset, "documents": [
        {"doc_id": doc_id, "title": title, "source": source, "origin": origin} for doc_id, title, source, origin in page]}


@router.delete("/documents/{doc_id:path}", response_model=IngestResponse,
               responses={**WRITE_ERRORS, 404: {"model": ErrorResponse}}, summary="Delete an ingested document")
def delete_document(doc_id: str, runtime: AuthorizedRuntime) -> IngestResponse:
    try:
        embedded, searchable = publish(runtime, [], [doc_id])
    except UnknownDocument:
        kept = serving(runtime).document(doc_id)
        if kept is not None:  # a folder's: only a reindex of that folder removes it
            raise ApiError(404, "not_found", f"{doc_id!r} was indexed from a folder ({kept.document.source}), not "
                           "over HTTP: delete that file and run `semsearch index` on its folder again")
        raise ApiError(404, "not_found", f"no document with id {doc_id!r}")
    return IngestResponse(accepted=[], deleted=[doc_id], generation=runtime.generation, searchable=searchable,
                          embedded=embedded)


@router.post("/admin/reload", responses=AUTH_ERRORS, summary="Switch to the newest index generation now")
def reload_index(runtime: AuthorizedRuntime) -> dict:
    return {"generation": runtime.reload(), "ready": runtime.searcher is not None}
