"""Tenant TLS material under ``base_cert_dir/<lb_id>/``, and the agent's own server certificate."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
import threading
from pathlib import Path

from amphora_agent import tls, validation
from amphora_agent.errors import NotFound
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.service import LockTable
from amphora_agent.system import files, uploads

LOG = logging.getLogger(__name__)


class TenantCertificates:
    """PUT, md5 and DELETE of the PEM files haproxy configs refer to by absolute path."""

    def __init__(self, layout: Layout, locks: LockTable) -> None:
        self.layout = layout
        self.locks = locks

    def _path(self, lb_id: str, name: str) -> Path:
        validation.object_id(lb_id, "loadbalancer")
        validation.pem_name(name)
        return self.layout.cert_dir(lb_id) / name

    def target(self, lb_id: str, name: str) -> uploads.Destination:
        """Where an uploaded PEM goes; id and name are checked before any byte is received."""
        return uploads.Destination(self._path(lb_id, name), self.layout.certs)

    def put(self, lb_id: str, name: str, upload: uploads.Upload) -> None:
        """Validate and store one PEM (0600, atomically)."""
        path = self._path(lb_id, name)
        with upload.contents() as body:
            tls.check_tenant_pem(body)
        with self.locks(lb_id):
            uploads.place(upload, path, files.PRIVATE, root=self.layout.certs)

    def md5(self, lb_id: str, name: str) -> str:
        """The md5 of the stored bytes, which the controller compares before uploading."""
        path = self._path(lb_id, name)
        try:
            data = files.read_bytes(path, root=self.layout.certs)
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        except FileNotFoundError as exc:
            raise NotFound("Certificate Not Found", f"No certificate with filename: {name}") from exc

    def delete(self, lb_id: str, name: str) -> None:
        """Remove one PEM; removing a missing one is fine (the controller ignores 404 anyway)."""
        path = self._path(lb_id, name)
        with self.locks(lb_id):
            files.remove(path, root=self.layout.certs)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # drop the folder once it is empty (a link: ENOTDIR, kept)


class ServerCertificate:
    """The agent's own certificate: replaced on disk and on the live TLS context, no restart."""

    def __init__(self, path: Path, context: ssl.SSLContext | None) -> None:
        self.path = path
        self.context = context
        self._lock = threading.Lock()  # the context reads cert and key in two opens: no write between

    def rotate(self, upload: uploads.Upload) -> None:
        """Validate (certificate + matching key), write atomically, present it on new handshakes."""
        with upload.contents() as body:
            tls.check_server_pem(body)
        with self._lock:
            uploads.place(upload, self.path, files.PRIVATE)
            if self.context is not None:
                self.context.load_cert_chain(str(self.path))
        LOG.info("server certificate rotated")
