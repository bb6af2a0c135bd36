"""The SSL session cache changes no verdict of ``haproxy -c``: every config of this corpus (the
controller's fixtures, the lab's, and the accepted and rejected shapes of the tests) gets the same
exit code and ALERT lines with the agent's ``tune.ssl.cachesize 0`` file as without it; and the
agent's whole check (its own rules, then that ``haproxy -c``) decides as a plain ``haproxy -c``.

The one config where the cache decides (a cache larger than the kernel grants) is refused by the
agent before its check, as plain ``haproxy -c`` refuses it. A whole test run can repeat this for
every check of every test: ``scripts/haproxy_check_twice.py`` (bench/README.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amphora_agent.errors import ConfigRejected
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.service import LoadBalancers
from amphora_agent.settings import LiveSettings, Settings
from amphora_agent.system import haproxy
from lab import configs, verdicts
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration
MULTI = "1255f924-18da-44a0-aad7-23512f2c0594"
AMP_A = "cad520e3-2e33-4593-892d-18fd042fdd61"
LB = "5eed0000-0000-4000-8000-0000000000cc"


@dataclass(frozen=True)
class Checker:
    """An agent's load balancer service over a private tree (the same check the API runs)."""

    root: Path
    lbs: LoadBalancers

    @property
    def base(self) -> Path:
        """``base_path``."""
        return self.lbs.layout.base

    def substitute(self, text: str) -> str:
        """The controller's default paths replaced by this tree's (certificates first)."""
        return text.replace("/var/lib/octavia/certs", str(self.lbs.layout.certs)).replace(
            "/var/lib/octavia", str(self.base)
        )

    def tls_pem(self) -> Path:
        """A certificate with its key for ``bind ... ssl crt``."""
        folder = FIXTURES / "certs-extra" / "tenant-upload"
        pem = self.root / "www.pem"
        pem.write_bytes(
            (folder / "www.example.com.crt").read_bytes() + (folder / "www.example.com.key").read_bytes()
        )
        return pem


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checker]:
    """The service, its folders, and the multi-listener LB's certificates in place."""
    root = tmp_path_factory.mktemp("verdicts")
    layout = Layout(root / "lib", root / "lib" / "certs")
    lbs = LoadBalancers(LiveSettings(Settings(base_path=layout.base, base_cert_dir=layout.certs)), layout)
    lbs.prepare()
    made = Checker(root, lbs)
    certs = layout.cert_dir(MULTI)
    certs.mkdir(parents=True)
    for pem in (FIXTURES / "certs" / MULTI).iterdir():
        (certs / pem.name).write_text(made.substitute(pem.read_text()))
    yield made
    shutil.rmtree(root, ignore_errors=True)


def _fixture(name: str, substitute: bool = True) -> Callable[[Checker], str]:
    def build(c: Checker) -> str:
        text = (FIXTURES / "haproxy" / name).read_text()
        return c.substitute(text) if substitute else text

    return build


def _tls(extra_global: str = "", bind: str = "") -> Callable[[Checker], str]:
    def build(c: Checker) -> str:
        return (
            f"global\n    stats socket {c.base}/{LB}.sock mode 0666 level user\n{extra_global}"
            "defaults\n    mode http\n    timeout client 1s\n    timeout server 1s\n    timeout connect 1s\n"
            f"frontend f\n    bind 198.51.100.10:443 ssl crt {bind or c.tls_pem()}\n    default_backend b\n"
            "backend b\n    server s 203.0.113.1:443 ssl verify none\n"
        )

    return build


def _lab(protocols: tuple[str, ...]) -> Callable[[Checker], str]:
    members = (configs.Member("m1", "203.0.113.11", 80), configs.Member("m2", "203.0.113.12", 80))
    listeners = tuple(
        configs.Listener(f"l{i}", proto, 8000 + i, members) for i, proto in enumerate(protocols)
    )
    return lambda c: configs.render_config(LB, configs.VIP, listeners, c.base).decode()


def _edit(build: Callable[[Checker], str], old: str, new: str) -> Callable[[Checker], str]:
    return lambda c: build(c).replace(old, new, 1)


SINGLE = _fixture("single-http.cfg")
CORPUS: list[tuple[str, Callable[[Checker], str], bool]] = [  # name, config, accepted
    *[(f"fixture-{p.stem}", _fixture(p.name), True) for p in sorted((FIXTURES / "haproxy").iterdir())],
    *[
        (f"fixture-{p.stem}-unmodified", _fixture(p.name, False), "multi" not in p.stem)
        for p in sorted((FIXTURES / "haproxy").iterdir())
    ],
    ("lab-http", _lab(("HTTP",)), True),
    ("lab-http-tcp", _lab(("HTTP", "TCP", "HTTP")), True),
    ("tls-controller-cache", _tls("    tune.ssl.cachesize 1085440\n"), True),
    ("tls-default-cache", _tls(), True),
    ("tls-cache-zero", _tls("    tune.ssl.cachesize 0\n"), True),
    ("tls-cache-not-a-number", _tls("    tune.ssl.cachesize abc\n"), True),
    ("tls-cache-negative", _tls("    tune.ssl.cachesize -1\n"), False),
    ("tls-missing-certificate", _tls(bind="/nonexistent/www.pem"), False),
    ("tls-bad-ciphers", _tls("    ssl-default-bind-ciphers NOPE\n"), False),
    ("tls-garbage-certificate", _tls(bind="/etc/hostname"), False),
    ("bogus-keyword", _edit(SINGLE, "    mode http\n", "    mode http\n    bogus-keyword 1\n"), False),
    ("no-listener", lambda c: "global\n    maxconn 10\n", False),
    ("nonsense", lambda c: "frontend x\n    bind :80\n    nonsense here\n", False),
    ("bad-bind", _edit(SINGLE, "198.51.100.10:80", "198.51.100.10:99999"), False),
    ("unknown-backend", _edit(SINGLE, "default_backend ", "default_backend nope-"), False),
    (
        "multi-without-certificates",
        lambda c: c.substitute(_fixture("multi-listener.cfg")(c)).replace(
            str(c.lbs.layout.cert_dir(MULTI)), str(c.root / "absent")
        ),
        False,
    ),
]


def _staged(checker: Checker, name: str, text: str) -> tuple[str, Path]:
    """The config's load balancer (the controller's first line names it) and its staged file."""
    path = checker.root / f"{name}.cfg"
    path.write_text(text)
    first = text.split("\n", 1)[0].split()
    return (first[-1] if first[:4] == ["#", "Configuration", "for", "loadbalancer"] else LB), path


@pytest.mark.parametrize(("name", "build", "accepted"), CORPUS, ids=[name for name, _, _ in CORPUS])
def test_the_cache_changes_no_verdict(
    checker: Checker, name: str, build: Callable[[Checker], str], accepted: bool
) -> None:
    """Same exit code and ALERT lines with and without the check's tuning file; the expected verdict."""
    lb_id, staged = _staged(checker, name, build(checker))
    instance = checker.lbs.instance(lb_id)
    argv = haproxy.check_argv(instance, staged, checker.lbs.layout.check_tuning)
    tuned, output = verdicts.run(argv)
    plain, _ = verdicts.run(verdicts.without_tuning(argv))
    assert tuned == plain, output
    assert tuned.accepted == accepted, output


@pytest.mark.parametrize(("name", "build", "accepted"), CORPUS, ids=[name for name, _, _ in CORPUS])
def test_the_agents_check_decides_as_haproxy(
    checker: Checker, name: str, build: Callable[[Checker], str], accepted: bool
) -> None:
    """Where the agent's own rules let a config through, its check accepts exactly what haproxy does."""
    if name.endswith("-unmodified"):
        pytest.skip("the controller's default paths are not this agent's: refused by its own rules")
    lb_id, staged = _staged(checker, name, build(checker))
    try:
        checker.lbs.check_config(lb_id, staged)
    except ConfigRejected:
        assert not accepted
    else:
        assert accepted


def test_a_cache_the_kernel_cannot_grant_is_refused_as_haproxy_refuses_it(checker: Checker) -> None:
    """The one config the cache decides: plain haproxy -c cannot allocate it; the agent refuses it first."""
    limit = haproxy.allocation_limit()
    assert limit is not None
    entries = min(2**31 - 1, 2 * limit // haproxy.SSL_CACHE_ENTRY_BYTES)
    _, staged = _staged(checker, "huge-cache", _tls(f"    tune.ssl.cachesize {entries}\n")(checker))
    argv = haproxy.check_argv(checker.lbs.instance(LB), staged)
    plain, output = verdicts.run(argv)
    assert not plain.accepted and "Unable to allocate SSL session cache" in output
    with pytest.raises(ConfigRejected) as refused:
        checker.lbs.check_config(LB, staged)
    assert "Unable to allocate SSL session cache" in (refused.value.details or "")
    assert "ALERT" in (refused.value.details or "")


def test_the_tuning_file_is_restored_before_each_check(checker: Checker) -> None:
    """Changed, or replaced by a link, the check's tuning file is written anew before the check runs."""
    tuning = checker.lbs.layout.check_tuning
    lb_id, staged = _staged(checker, "restore", SINGLE(checker))
    for tamper in ("content", "link"):
        tuning.unlink()
        if tamper == "content":
            tuning.write_text("global\n    tune.ssl.cachesize 999999999\n")
        else:
            tuning.symlink_to(checker.root / "elsewhere")
        checker.lbs.check_config(lb_id, staged)
        assert not tuning.is_symlink() and tuning.read_bytes() == haproxy.CHECK_TUNING
    assert not (checker.root / "elsewhere").exists()
