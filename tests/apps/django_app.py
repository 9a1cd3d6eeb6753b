"""A small single-module Django app: GET, form POST, multipart upload, streaming, download, 404, 500."""

import hashlib
import json

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="maitre-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()

from django.http import (
    FileResponse,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from apps.data import STREAM_CHUNK, STREAM_CHUNKS, download_path


def index(request):
    return HttpResponse("Hello from Django")


@csrf_exempt
def form(request):
    return JsonResponse({k: request.POST[k] for k in request.POST})


@csrf_exempt
def upload(request):
    f = request.FILES["file"]
    h = hashlib.sha256()
    size = 0
    for chunk in f.chunks():
        h.update(chunk)
        size += len(chunk)
    return HttpResponse(json.dumps({"name": f.name, "size": size, "sha256": h.hexdigest(),
                                    "field": request.POST.get("field")}),
                        content_type="application/json")


def stream(request):
    def gen():
        for _ in range(STREAM_CHUNKS):
            yield STREAM_CHUNK
    return StreamingHttpResponse(gen(), content_type="application/octet-stream")


def download(request):
    return FileResponse(open(download_path(), "rb"), as_attachment=True, filename="data.bin")


def boom(request):
    raise RuntimeError("boom")


urlpatterns = [
    path("", index),
    path("form", form),
    path("upload", upload),
    path("stream", stream),
    path("download", download),
    path("boom", boom),
]

from django.core.wsgi import get_wsgi_application

app = get_wsgi_application()
