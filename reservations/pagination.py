"""Pagination of the list endpoints: DRF's page numbers, with a client page size."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class PageSizePagination(PageNumberPagination):
    """PAGE_SIZE items per page unless the client asks for up to 200 (`page_size`)."""

    page_size_query_param = "page_size"
    max_page_size = 200
