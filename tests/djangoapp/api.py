"""Django REST framework views for the API caching tests."""

from __future__ import annotations

from typing import Any

from rest_framework import generics, serializers
from rest_framework.decorators import api_view
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from django_bridge.views import cache_api_list, cache_api_response

from .views import runs

ITEMS = [{"id": i, "name": f"item {i}"} for i in range(1, 6)]


@cache_api_response(60, vary_on=["Accept-Language"])
@api_view(["GET", "POST"])
def products(request: Request) -> Response:
    runs["products"] += 1
    if request.method == "POST":
        return Response({"error": "nope"}, status=400)
    if request.query_params.get("fail"):
        return Response({"error": "bad"}, status=400)
    language = request.headers.get("Accept-Language", "-")
    return Response({"language": language, "run": runs["products"], "items": ITEMS[:2]})


class ItemSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class TwoPerPage(PageNumberPagination):
    page_size = 2


@cache_api_list(60)
class ItemList(generics.ListAPIView[Any]):
    serializer_class = ItemSerializer
    pagination_class = TwoPerPage

    def get_queryset(self) -> Any:
        runs["items"] += 1
        return ITEMS
