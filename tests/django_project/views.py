"""The test project's views. ``gate`` lets a test hold a view mid-request."""

from __future__ import annotations

import threading

from django.db import connections
from django.http import HttpRequest, JsonResponse

from .models import Item

gate = threading.Event()  # set by the test: /slow waits for it while holding its connection


def count(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": Item.objects.count()})


def slow(request: HttpRequest) -> JsonResponse:
    n = Item.objects.count()  # borrow: the leak report's line
    gate.wait(30)
    return JsonResponse({"count": n})


def one(request: HttpRequest) -> JsonResponse:
    with connections["one"].cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return JsonResponse({"pid": cur.fetchone()[0]})
