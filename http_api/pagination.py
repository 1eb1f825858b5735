"""Pagination of the list endpoints: DRF's page numbers, with a client page size."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

_DIGITS = re.compile(r"[0-9]+")


class PageSizePagination(PageNumberPagination):
    """PAGE_SIZE items per page unless the client asks for 1 to 200 (`page_size`).

    A `page_size` that is not such a whole number (`null`, empty, 0, 201, `abc`) is a
    400 validation_error, not silently the default or the maximum as in DRF: the
    client learns its request was not the one it meant. The schema publishes the
    bounds. `page` keeps DRF's behaviour (a page that is not a number or past the end
    is a 404).
    """

    page_size_query_param = "page_size"
    max_page_size = 200
    min_page_size = 1

    def get_page_size(self, request: Request) -> int | None:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        # Digits only: int() would also take " 5", "+5", "5_0" and non-ASCII digits.
        size = int(raw) if _DIGITS.fullmatch(raw) else None
        if size is None or not self.min_page_size <= size <= self.max_page_size:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"Must be a whole number from {self.min_page_size} to "
                        f"{self.max_page_size}; without it a page has "
                        f"{self.page_size} items."
                    ]
                }
            )
        return size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": self.min_page_size,
                    "maximum": self.max_page_size,
                    "default": self.page_size,
                }
                parameter["description"] = (
                    f"Items per page, {self.min_page_size} to {self.max_page_size} "
                    f"(default {self.page_size}); any other value is a 400."
                )
        return parameters
