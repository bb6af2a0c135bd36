"""The only module that knows HTTP: route table, request -> typed args, result -> JSON, error -> status."""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from http import HTTPStatus
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from amphora_agent import errors
from amphora_agent.agentconfig import AgentConfig
from amphora_agent.info import API_VERSION, HostInfo
from amphora_agent.keepalived.objects import KeepalivedServices
from amphora_agent.loadbalancers.certificates import ServerCertificate, TenantCertificates
from amphora_agent.loadbalancers.service import LoadBalancers
from amphora_agent.network.plans import BadBody
from amphora_agent.network.service import Networking, NoInterface
from amphora_agent.system import uploads

LOG = logging.getLogger(__name__)
HTTP_CODES = {status.value for status in HTTPStatus}

# The body limits, enforced here and nowhere else (docs/hardening.md). Over a limit the answer is a
# JSON 413 and the server reads and drops the rest of the body, so that the client reads the 413.
MAX_UPLOAD = 16 << 20  # every uploaded file: haproxy, VRRP and LVS configs, PEMs, the agent config
MAX_JSON = 1 << 20  # plug and rules bodies, parsed in memory
FLUSH = 256 << 10  # upload bytes gathered in memory before they are written out

Shape = Literal["message", "framework", "details"]
# Domain error -> status and body shape, most specific class first. "message": the controller's
# ``{"message", "details"}``; "framework": the existing agent's framework-style 400 for a bad plug
# body; "details": the retryable 404 of a NIC not visible yet (the controller matches its text).
STATUS: list[tuple[type[errors.AgentError], int, Shape]] = [
    (errors.TooLarge, 413, "message"),
    (BadBody, 400, "framework"),
    (errors.InvalidInput, 400, "message"),
    (NoInterface, 404, "details"),
    (errors.NotFound, 404, "message"),
    (errors.Conflict, 409, "message"),
    (errors.Unavailable, 503, "message"),
    (errors.CommandFailed, 500, "message"),
]
HTTP_TEXT = {
    400: ("Bad Request", "The browser (or proxy) sent a request that this server could not understand."),
    404: (
        "Not Found",
        "The requested URL was not found on the server. If you entered the URL "
        "manually please check your spelling and try again.",
    ),
    405: ("Method Not Allowed", "The method is not allowed for the requested URL."),
    500: (
        "Internal Server Error",
        "The server encountered an internal error and was unable to "
        "complete your request. Either the server is overloaded or there is an error in the "
        "application.",
    ),
}


@dataclass(frozen=True)
class Services:
    """What the routes call; built once by the composition root."""

    lbs: LoadBalancers
    certs: TenantCertificates
    server_cert: ServerCertificate
    agent_config: AgentConfig
    info: HostInfo
    network: Networking
    keepalived: KeepalivedServices
    tls_context: ssl.SSLContext  # the server's live context: rotation loads the new chain into it


def ok(details: str | None = None, status: int = 202, etag: str | None = None) -> JSONResponse:
    """The controller's success body: ``{"message": "OK"}`` plus optional ``details``."""
    body = {"message": "OK"} if details is None else {"message": "OK", "details": details}
    return JSONResponse(body, status, headers={"ETag": etag} if etag else None)


def error_body(exc: errors.AgentError) -> dict[str, Any]:
    """``message`` and (when known) ``details``, as the existing agent renders them."""
    body: dict[str, Any] = {"message": exc.message}
    if exc.details is not None:
        body["details"] = exc.details
    return body


def status_of(exc: errors.AgentError) -> tuple[int, Shape]:
    """The one status and body shape of a domain error."""
    return next(((code, shape) for kind, code, shape in STATUS if isinstance(exc, kind)), (500, "message"))


def http_error_body(status: int, detail: str | None = None) -> dict[str, Any]:
    """The body of a framework error (no route, wrong method, crash, timeout) in both agents' shapes."""
    name, text = HTTP_TEXT.get(status, (HTTPStatus(status).phrase if status in HTTP_CODES else "Error", ""))
    text = detail or text or name
    return {"message": name, "details": text, "error": f"{status} {name}: {text}", "http_code": status}


def http_error(status: int, detail: str | None = None) -> JSONResponse:
    """A framework error as a response."""
    return JSONResponse(http_error_body(status, detail), status)


def error_json(status: int, detail: str) -> bytes:
    """A framework error's bytes, for the answers the server gives itself (400, 408, 500)."""
    return bytes(JSONResponse(http_error_body(status, detail or None), status).body)


def _over(limit: int) -> errors.TooLarge:
    return errors.TooLarge("Request body too large", f"the limit is {limit} bytes")


def _check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _over(limit)


async def read_body(request: Request, limit: int = MAX_JSON) -> bytes:
    """A JSON body, in memory, refused with 413 as soon as it exceeds ``limit``."""
    _check_declared(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _over(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def stored(
    request: Request, target: uploads.Destination, store: Callable[[uploads.Upload], object]
) -> uploads.Upload:
    """The body, written as it arrives to a temp file beside ``target`` (md5 on the way), refused with
    413 past MAX_UPLOAD, then handed to ``store``; the temp file never outlives the request.

    At most FLUSH bytes of the body are in memory at once. The last part, the fsync and ``store`` go
    to a worker thread in one trip: a body under FLUSH costs one, as a body read whole did.
    """
    _check_declared(request, MAX_UPLOAD)
    writer: uploads.UploadWriter | None = None
    try:
        pending, size = bytearray(), 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise _over(MAX_UPLOAD)
            pending += chunk
            if len(pending) >= FLUSH:
                block, pending = pending, bytearray()
                writer = await run_in_threadpool(_write, writer, target, block)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    last = writer

    def finish_and_store() -> uploads.Upload:
        upload = _write(last, target, pending).finish()
        try:
            store(upload)
        finally:
            upload.discard()
        return upload

    return await run_in_threadpool(finish_and_store)


def _write(
    writer: uploads.UploadWriter | None, target: uploads.Destination, block: bytearray
) -> uploads.UploadWriter:
    """Append ``block`` to the upload, starting its temp file first if need be (in a worker thread)."""
    writer = writer or uploads.UploadWriter(target.path, target.root)
    if block:
        writer.write(block)
    return writer


def md5(data: bytes) -> str:
    """The ETag the existing agent sends: a bare md5 hex digest."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@functools.cache
def openapi_document() -> bytes:
    """The API's OpenAPI document (docs/openapi.yaml, shipped in the package), read once."""
    return (importlib.resources.files("amphora_agent") / "openapi.yaml").read_bytes()


def build_routes(svc: Services) -> list[Route]:
    """The API 1.0 route table: one list per area, in matching order."""
    return core_routes(svc) + network_routes(svc) + keepalived_routes(svc)


def core_routes(svc: Services) -> list[Route]:
    """Version discovery, info, haproxy load balancers, certificates and agent config."""
    objects = svc.keepalived.objects  # load balancer ids may name LVS listeners too (reference 5.5)

    async def version(request: Request) -> Response:
        return JSONResponse({"api_version": API_VERSION})

    async def info(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(svc.info.info))

    async def details(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(svc.info.details))

    async def put_haproxy(request: Request) -> Response:
        amphora_id, lb_id = request.path_params["amphora_id"], request.path_params["lb_id"]
        target = objects.config_target(amphora_id, lb_id)
        upload = await stored(request, target, partial(objects.put_config, amphora_id, lb_id))
        return ok(etag=upload.md5)

    async def get_haproxy(request: Request) -> Response:
        data = await run_in_threadpool(svc.lbs.get_config, request.path_params["lb_id"])
        return Response(data, 200, media_type="text/plain; charset=UTF-8", headers={"ETag": md5(data)})

    async def lb_action(request: Request) -> Response:
        p = request.path_params
        details = await run_in_threadpool(objects.act, p["object_id"], p["action"])
        return ok(details)

    async def listeners(request: Request) -> Response:
        rows = await run_in_threadpool(lambda: [asdict(row) for row in objects.listeners()])
        return JSONResponse(rows)

    async def delete_listener(request: Request) -> Response:
        await run_in_threadpool(objects.delete, request.path_params["object_id"])
        return ok(status=200)

    async def put_cert(request: Request) -> Response:
        lb_id, name = request.path_params["lb_id"], request.path_params["filename"]
        upload = await stored(request, svc.certs.target(lb_id, name), partial(svc.certs.put, lb_id, name))
        return ok(status=200, etag=upload.md5)

    async def get_cert(request: Request) -> Response:
        p = request.path_params
        digest = await run_in_threadpool(svc.certs.md5, p["lb_id"], p["filename"])
        return JSONResponse({"md5sum": digest}, headers={"ETag": digest})

    async def delete_cert(request: Request) -> Response:
        p = request.path_params
        await run_in_threadpool(svc.certs.delete, p["lb_id"], p["filename"])
        return ok(status=200)

    async def put_server_cert(request: Request) -> Response:
        await stored(request, uploads.Destination(svc.server_cert.path), svc.server_cert.rotate)
        return ok()

    async def put_config(request: Request) -> Response:
        await stored(request, svc.agent_config.target, svc.agent_config.put)
        return ok()

    async def openapi(request: Request) -> Response:
        return Response(await run_in_threadpool(openapi_document), 200, media_type="application/yaml")

    lb = "/1.0/loadbalancer"
    return [
        Route("/", version, methods=["GET"]),
        Route("//", version, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/1.0/info", info, methods=["GET"]),
        Route("/1.0/details", details, methods=["GET"]),
        Route(lb + "/{lb_id}/certificates/{filename}", put_cert, methods=["PUT"]),
        Route(lb + "/{lb_id}/certificates/{filename}", get_cert, methods=["GET"]),
        Route(lb + "/{lb_id}/certificates/{filename}", delete_cert, methods=["DELETE"]),
        Route(lb + "/{amphora_id}/{lb_id}/haproxy", put_haproxy, methods=["PUT"]),
        Route(lb + "/{lb_id}/haproxy", get_haproxy, methods=["GET"]),
        Route(lb + "/{object_id}/{action}", lb_action, methods=["PUT"]),
        Route("/1.0/listeners", listeners, methods=["GET"]),
        Route("/1.0/listeners/{object_id}", delete_listener, methods=["DELETE"]),
        Route("/1.0/certificate", put_server_cert, methods=["PUT"]),
        Route("/1.0/config", put_config, methods=["PUT"]),
        Route("/1.0/openapi.yaml", openapi, methods=["GET"]),
    ]


def network_routes(svc: Services) -> list[Route]:
    """Plug VIP, plug network, interface lookup and the VIP firewall."""
    net = svc.network

    def local_address(request: Request) -> str | None:
        server = request.scope.get("server")
        return str(server[0]) if server else None

    async def plug_vip(request: Request) -> Response:
        body = await read_body(request)
        vip, reached = request.path_params["vip"], local_address(request)
        return ok(await run_in_threadpool(net.plug_vip, vip, body, reached))

    async def plug_network(request: Request) -> Response:
        body = await read_body(request)
        reached = local_address(request)
        return ok(await run_in_threadpool(net.plug_network, body, reached))

    async def get_interface(request: Request) -> Response:
        name = await run_in_threadpool(net.interface_of, request.path_params["ip_addr"])
        return JSONResponse({"message": "OK", "interface": name})

    async def put_rules(request: Request) -> Response:
        body = await read_body(request)
        await run_in_threadpool(net.set_rules, request.path_params["ip_addr"], body)
        return ok(status=200)

    return [
        Route("/1.0/plug/vip/{vip}", plug_vip, methods=["POST"]),
        Route("/1.0/plug/network", plug_network, methods=["POST"]),
        Route("/1.0/interface/{ip_addr}", get_interface, methods=["GET"]),
        Route("/1.0/interface/{ip_addr}/rules", put_rules, methods=["PUT"]),
    ]


def keepalived_routes(svc: Services) -> list[Route]:
    """VRRP config and actions, UDP/SCTP (LVS) listener configs."""
    ka = svc.keepalived

    async def vrrp_upload(request: Request) -> Response:
        upload = await stored(request, ka.vrrp.config_target(), ka.vrrp.put_config)
        return ok(status=200, etag=upload.md5)

    async def vrrp_action(request: Request) -> Response:
        return ok(await run_in_threadpool(ka.vrrp.act, request.path_params["action"]))

    async def put_udp_listener(request: Request) -> Response:
        amphora_id, listener_id = request.path_params["amphora_id"], request.path_params["listener_id"]
        target = ka.objects.udp_listener_target(amphora_id, listener_id)
        store = partial(ka.objects.put_udp_listener, amphora_id, listener_id)
        upload = await stored(request, target, store)
        return ok(status=200, etag=upload.md5)

    async def get_udp_listener(request: Request) -> Response:
        data = await run_in_threadpool(ka.lvs.get_config, request.path_params["listener_id"])
        return Response(data, 200, media_type="text/plain; charset=UTF-8")

    return [
        Route("/1.0/vrrp/upload", vrrp_upload, methods=["PUT"]),
        Route("/1.0/vrrp/{action}", vrrp_action, methods=["PUT"]),
        Route("/1.0/listeners/{amphora_id}/{listener_id}/udp_listener", put_udp_listener, methods=["PUT"]),
        Route("/1.0/listeners/{listener_id}/udp_listener", get_udp_listener, methods=["GET"]),
    ]


async def on_agent_error(request: Request, exc: Exception) -> Response:
    """Domain errors -> their status and the controller's JSON body."""
    assert isinstance(exc, errors.AgentError)
    status, shape = status_of(exc)
    log = LOG.warning if status < 500 else LOG.error
    log("%s %s -> %d %s", request.method, request.url.path, status, exc)
    if shape == "framework":
        return http_error(status, exc.message)
    if shape == "details":
        return JSONResponse({"details": exc.details}, status)
    return JSONResponse(error_body(exc), status)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Router errors (404, 405) as JSON: a non-JSON 404 makes the controller retry for minutes."""
    assert isinstance(exc, HTTPException)
    return http_error(exc.status_code)


async def on_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away (or the server timed its body out): nobody reads this answer."""
    LOG.debug("%s %s: the client disconnected", request.method, request.url.path)
    return http_error(400, "the client disconnected")


async def on_crash(request: Request, exc: Exception) -> Response:
    """Anything unexpected: a JSON 500, and the traceback in the log."""
    LOG.exception("%s %s failed", request.method, request.url.path)
    return http_error(500)


def create_app(svc: Services) -> Starlette:
    """The ASGI app for the given services."""
    app = Starlette(
        routes=build_routes(svc),
        exception_handlers={
            errors.AgentError: on_agent_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_disconnect,
            Exception: on_crash,
        },
    )
    app.router.redirect_slashes = False
    return app
