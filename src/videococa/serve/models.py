"""Request bodies of the JSON API (pydantic: FastAPI validates them and documents them in /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Strict):
    """Which videos a search or listing may return."""

    path_prefix: str | None = Field(None, description="path relative to the library root starts with this")
    path_glob: str | None = Field(None, description="path relative to the library root matches this glob (* ? [...])")
    min_duration: float | None = Field(None, ge=0, description="seconds")
    max_duration: float | None = Field(None, ge=0, description="seconds")
    modified_after: float | None = Field(None, description="Unix time")
    modified_before: float | None = Field(None, description="Unix time")


class SearchRequest(_Strict):
    """A search by text, by an indexed entry ("more like this"), or by an uploaded image or clip (multipart)."""

    text: str | None = Field(None, max_length=1000, description="text query")
    entry_id: int | None = Field(None, ge=1, description="find moments like this indexed entry")
    top_k: int = Field(20, ge=1, le=200)
    group_by: Literal["moment", "video"] = "moment"
    min_score: float | None = Field(None, ge=-1, le=1, description="cosine similarity threshold")
    filters: Filters = Field(default_factory=Filters)
    hybrid: bool = Field(True, description="also match caption words when the index stores captions")
    cursor: str | None = Field(None, max_length=400, description="next_cursor of the previous page")

    @model_validator(mode="after")
    def _one_query(self):
        given = [k for k in ("text", "entry_id") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give one of text or entry_id (or upload a file), not both")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is empty")
        return self


class MomentRequest(_Strict):
    """A time range of a video (whole video when both are absent)."""

    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class CaptionRequest(MomentRequest):
    method: Literal["greedy", "beam"] = "beam"
    max_len: int = Field(20, ge=1, le=60)


class AskRequest(MomentRequest):
    question: str = Field(..., min_length=1, max_length=500)


class ClassifyRequest(_Strict):
    """Zero-shot classification of an indexed entry or video (or an upload) over a label set or given labels."""

    entry_id: int | None = Field(None, ge=1)
    labels: list[str] | None = Field(None, min_length=1, max_length=2000)
    label_set: str | None = Field(None, description="a bundled set: kinetics400, kinetics600, kinetics700, ucf101, "
                                                     "hmdb51, charades")
    top_k: int = Field(5, ge=1, le=100)

    @model_validator(mode="after")
    def _labels(self):
        if (self.labels is None) == (self.label_set is None):
            raise ValueError("give labels (a list of class names) or label_set (a bundled name), one of them")
        return self
