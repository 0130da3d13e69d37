"""The API's field-level validation error, shared by dispatch and the trunk API.

A leaf module so that trunk_directory (whose TrunkError is one) and dispatch
(which looks trunks up in the directory) need not import each other.
"""

from __future__ import annotations


class DispatchError(ValueError):
    """A request field the API rejects: answered 422 as {"error", "field", "reason"}."""

    summary = "invalid dispatch request"  # the "error" text; other APIs' subclasses name their own

    def __init__(self, field_path: str, reason: str) -> None:
        super().__init__(f"{field_path}: {reason}")
        self.field = field_path
        self.reason = reason

    def to_json(self) -> dict[str, str]:
        return {"error": self.summary, "field": self.field, "reason": self.reason}
