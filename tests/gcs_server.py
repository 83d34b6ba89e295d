"""gcp-storage-emulator as a Google Cloud Storage stand-in, run as a separate process.

google-cloud-storage finds it through STORAGE_EMULATOR_HOST and then uses
anonymous credentials, exactly as it would in a plikd deployment pointed at
an emulator; the tests therefore set that variable for their process and
for every CLI subprocess they start.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, stop_process, wait_http

PROJECT = "pmigrate-test"

# The emulator serves objects through http.server, which can only send
# Latin-1 header values and drops the connection on an object whose stored
# Content-Type holds other characters; GCS keeps and serves any UTF-8 type.
# Send such values as UTF-8 so that a unicode content type can be tested.
_LAUNCH = """
import sys
from http.server import BaseHTTPRequestHandler

def send_header(self, keyword, value):
    if self.request_version != "HTTP/0.9":
        if not hasattr(self, "_headers_buffer"):
            self._headers_buffer = []
        line = f"{keyword}: {value}\\r\\n"
        try:
            self._headers_buffer.append(line.encode("latin-1"))
        except UnicodeEncodeError:
            self._headers_buffer.append(line.encode("utf-8"))
    if keyword.lower() == "connection":
        if value.lower() == "close":
            self.close_connection = True
        elif value.lower() == "keep-alive":
            self.close_connection = False

BaseHTTPRequestHandler.send_header = send_header
from gcp_storage_emulator.__main__ import main
sys.argv[0] = "gcp-storage-emulator"
sys.exit(main())
"""


@dataclass
class GCSServer:
    url: str  # http://127.0.0.1:port, the value of STORAGE_EMULATOR_HOST
    proc: subprocess.Popen

    def env(self) -> dict[str, str]:
        """What a process needs in its environment to reach this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.url, "GOOGLE_CLOUD_PROJECT": PROJECT}

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def new_bucket(self, prefix: str = "pmt") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(name)
        return name

    def toml(self, bucket: str, *, folder: str = "", extra: str = "") -> str:
        return f'DataBackend = "gcs"\n[DataBackendConfig]\n  Bucket = "{bucket}"\n  Folder = "{folder}"\n{extra}'

    def stop(self) -> None:
        stop_process(self.proc)


def start_gcs(data_dir: Path | None = None) -> GCSServer:
    """Start the emulator on a free loopback port (in memory unless data_dir is given)."""
    port = free_port()
    cmd = [sys.executable, "-c", _LAUNCH]
    if data_dir is not None:
        cmd += ["-d", str(data_dir)]
    cmd += ["start", "--host", "127.0.0.1", "--port", str(port), "-q"]
    if data_dir is None:
        cmd.append("--in-memory")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return GCSServer(url=f"http://127.0.0.1:{port}", proc=proc)
