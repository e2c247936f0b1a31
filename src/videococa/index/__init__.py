"""The persistent video index: FAISS vectors + SQLite metadata."""

from .query import SearchFilter
from .store import EXACT_LIMIT, RepairReport, SearchHit, Segment, UpdateReport, VideoIndex, VideoRecord, build_faiss

__all__ = ["EXACT_LIMIT", "RepairReport", "SearchFilter", "SearchHit", "Segment", "UpdateReport", "VideoIndex", "VideoRecord",
           "build_faiss"]
