"""A small Flask app: GET, form POST, multipart upload, streaming, file download, 404, 500."""

import hashlib

from flask import Flask, Response, jsonify, request, send_file

from apps.data import STREAM_CHUNK, STREAM_CHUNKS, download_path

app = Flask(__name__)


@app.route("/")
def index():
    return "Hello from Flask"


@app.route("/form", methods=["POST"])
def form():
    return jsonify(dict(request.form))


@app.route("/upload", methods=["POST"])
def upload():
    f = request.files["file"]
    h = hashlib.sha256()
    size = 0
    while True:
        block = f.stream.read(65536)
        if not block:
            break
        h.update(block)
        size += len(block)
    return jsonify({"name": f.filename, "size": size, "sha256": h.hexdigest(),
                    "field": request.form.get("field")})


@app.route("/stream")
def stream():
    def gen():
        for _ in range(STREAM_CHUNKS):
            yield STREAM_CHUNK
    return Response(gen(), mimetype="application/octet-stream")


@app.route("/download")
def download():
    return send_file(download_path(), mimetype="application/octet-stream", as_attachment=True,
                     download_name="data.bin")


@app.route("/boom")
def boom():
    raise RuntimeError("boom")
