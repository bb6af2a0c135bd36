"""Pure text for keepalived: config-test outcome classification, LVS config parsing, check scripts.

Nothing here does I/O. keepalived's config test exits non-zero on warnings too (and 0 on a missing
file), so the verdict is built from its diagnostic lines, never from the exit code alone.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Diagnostics keepalived prints for configs that still run as the controller means them. Everything
# else keepalived reports is fatal: an allow-list, so a config never runs half-understood.
WARNINGS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"SECURITY VIOLATION - (check )?scripts are being executed but script_security not enabled"
        ),
        "the controller's configs set no global_defs: scripts run as root",
    ),
    (
        re.compile(r"unknown route keyword gateway|VRRP parsed invalid IP gateway\. skipping IP"),
        "a host route written with 'gateway' is ignored by keepalived (controller template)",
    ),
    (re.compile(r"Script user '[^']*' does not exist"), "scripts run as root"),
    (
        re.compile(r"WARNING - default user '[^']*' for script execution does not exist"),
        "scripts run as root",
    ),
    (re.compile(r"^NOTICE: "), "a tuning hint"),
    (
        re.compile(r"Warning - nopreempt will not work with initial state MASTER - clearing"),
        "controllers up to 2024.1 render 'state MASTER' with 'nopreempt': keepalived drops nopreempt, "
        "so that MASTER preempts (as it did with the existing agent)",
    ),
)
# Lines of a checker dry start that are diagnostics although they carry no "(file: Line n)" prefix.
UNPREFIXED_FATAL = re.compile(
    r"There are \d+ missing|Unable to set network namespace|Failed to open /run/netns|"
    r"Config files missing|Non-existent interface|not found/accessible|must be set"
)
_LINE_PREFIX = re.compile(r"^\((?:[^)]*: )?Line \d+\)")
_TIMESTAMP = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}: ")


@dataclass(frozen=True)
class Verdict:
    """What keepalived said about a config: fatal diagnostics and tolerated warnings, in order."""

    fatal: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the config may be stored."""
        return not self.fatal

    def merged(self, other: Verdict) -> Verdict:
        """Both verdicts, each line once."""
        return Verdict(
            tuple(dict.fromkeys(self.fatal + other.fatal)),
            tuple(dict.fromkeys(self.warnings + other.warnings)),
        )

    def report(self) -> str:
        """The diagnostics as keepalived printed them, fatal ones first."""
        lines = list(self.fatal)
        if self.warnings:
            lines += ["tolerated warnings:", *self.warnings]
        return "\n".join(lines)


def warning_reason(line: str) -> str | None:
    """Why ``line`` is only a warning, or None when it is fatal."""
    return next((why for pattern, why in WARNINGS if pattern.search(line)), None)


def classify(output: str, *, dry_start: bool = False, extra_fatal: Iterable[str] = ()) -> Verdict:
    """Sort keepalived's output into fatal lines and warnings.

    ``keepalived -t`` prints only diagnostics, so every line counts. A checker dry start (``-n -l -C``)
    also logs its progress: there only "(file: Line n)" lines and the known unprefixed errors count.
    """
    fatal: list[str] = list(extra_fatal)
    warnings: list[str] = []
    for raw in output.splitlines():
        line = _TIMESTAMP.sub("", raw).strip()
        if not line:
            continue
        if warning_reason(line) is not None:
            warnings.append(line)
        elif not dry_start or _LINE_PREFIX.match(line) or UNPREFIXED_FATAL.search(line):
            fatal.append(line)
    return Verdict(tuple(dict.fromkeys(fatal)), tuple(dict.fromkeys(warnings)))


def vrrp_problems(text: str) -> list[str]:
    """What the agent itself requires of a VRRP config beyond keepalived's parse."""
    if not re.search(r"^\s*vrrp_instance\s+\S+\s*\{", text, re.MULTILINE):
        return ["no vrrp_instance block: nothing for keepalived to do"]
    return []


# -- LVS configs -------------------------------------------------------------------------------
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CONFIGURED = re.compile(rf"^#\s*Configuration for (\w+) ({_UUID})\s*$")
_DISABLED = re.compile(rf"^#\s*(\w+) ({_UUID}) is disabled\s*$")


@dataclass(frozen=True)
class RealServer:
    """A member as the LVS config declares it (a disabled member has no address)."""

    member_id: str | None
    address: str | None
    port: int | None
    check: str | None  # MISC_CHECK, HTTP_GET or TCP_CHECK
    misc_path: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether the member is configured (not only mentioned as disabled)."""
        return self.address is not None


@dataclass(frozen=True)
class LvsConfig:
    """What the agent needs from a controller-rendered keepalived LVS config."""

    loadbalancer_id: str | None
    listener_id: str | None
    namespace: str | None
    vips: tuple[tuple[str, int], ...]
    protocols: tuple[str, ...]
    members: tuple[RealServer, ...]
    pool_id: str | None = None  # None without an enabled pool ("# Pool <id> is disabled")
    listener_disabled: bool = False  # "# Listener <id> is disabled": not reported in heartbeats

    @property
    def has_virtual_server(self) -> bool:
        """Whether a virtual service is configured (a disabled listener has none)."""
        return bool(self.protocols)

    @property
    def needs_ipvs(self) -> bool:
        """Whether keepalived's checker programs IPVS: a virtual server with an enabled member (with
        none it runs without touching the kernel)."""
        return self.has_virtual_server and any(member.enabled for member in self.members)

    @property
    def health_monitor(self) -> bool:
        """Whether any member is health-checked."""
        return any(member.check for member in self.members)


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def parse_lvs(text: str) -> LvsConfig:
    """Ids, namespace, every VIP (all of each group), protocols and members of an LVS config."""
    ids: dict[str, str] = {}
    disabled: set[str] = set()  # kinds marked "# <Kind> <id> is disabled"
    namespace: str | None = None
    vips: list[tuple[str, int]] = []
    protocols: list[str] = []
    members: list[RealServer] = []
    pending: str | None = None  # the member id of the last "Configuration for Member" comment
    block: list[str] = []  # keywords of the open blocks
    server: dict[str, str | int | None] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if match := _CONFIGURED.match(line):
            ids.setdefault(match[1], match[2])
            pending = match[2] if match[1] == "Member" else pending
            continue
        if match := _DISABLED.match(line):
            disabled.add(match[1])
            if match[1] == "Member":
                members.append(RealServer(match[2], None, None, None))
            continue
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "}":
            closed = block.pop() if block else ""
            if closed == "real_server":
                if not server:  # "real_server {" without an address and port
                    raise ValueError("a real_server needs an address and a port")
                members.append(RealServer(**server))  # type: ignore[arg-type]
                server = {}
            continue
        if block[-1:] == ["virtual_server_group"] and len(words) >= 2 and words[1].isdigit():
            vips.append((_ip(words[0]), int(words[1])))
        elif words[0] == "net_namespace" and len(words) > 1 and not block:
            namespace = words[1]
        elif words[0] == "protocol" and block[-1:] == ["virtual_server"] and len(words) > 1:
            protocols.append(words[1].upper())
        elif words[0] == "real_server" and len(words) >= 3:
            server = {"member_id": pending, "address": _ip(words[1]), "port": int(words[2]), "check": None}
            pending = None
        elif words[0] in ("MISC_CHECK", "HTTP_GET", "TCP_CHECK") and block[-1:] == ["real_server"]:
            server["check"] = words[0]
        elif words[0] == "misc_path" and block[-1:] == ["MISC_CHECK"]:
            server["misc_path"] = line.split(None, 1)[1].strip().strip('"')
        if words[-1] == "{":
            block.append(words[0])
    return LvsConfig(
        ids.get("Loadbalancer"),
        ids.get("Listener"),
        namespace,
        tuple(dict.fromkeys(vips)),
        tuple(dict.fromkeys(protocols)),
        tuple(members),
        ids.get("Pool"),
        "Listener" in disabled,
    )


# The controller's LVS template names this namespace always (a constant there): it means "the
# amphora's haproxy namespace", whatever the agent's ``network_namespace`` is called.
CONTROLLER_NAMESPACE = "amphora-haproxy"
_NET_NAMESPACE = re.compile(r"^(\s*net_namespace\s+)(\S+)(.*)$")


def lvs_problems(text: str, namespace: str) -> list[str]:
    """What the agent itself requires of an LVS config: the controller's namespace or this agent's."""
    declared = parse_lvs(text).namespace
    if declared not in (None, namespace, CONTROLLER_NAMESPACE):
        return [f"net_namespace {declared} is not this amphora's haproxy namespace ({namespace})"]
    return []


def lvs_run_text(text: str, namespace: str) -> str | None:
    """The config keepalived must run when ``text`` names another namespace than ``namespace``:
    the same lines with the top-level ``net_namespace`` naming the agent's (None: run ``text``)."""
    if parse_lvs(text).namespace in (None, namespace):
        return None
    lines, depth = text.splitlines(keepends=True), 0
    for index, line in enumerate(lines):  # blocks counted as parse_lvs counts them
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        match = _NET_NAMESPACE.match(line.rstrip("\n"))
        if depth == 0 and match:
            lines[index] = f"{match[1]}{namespace}{match[3]}" + ("\n" if line.endswith("\n") else "")
        if words[0] == "}":
            depth = max(0, depth - 1)
        elif words[-1] == "{":
            depth += 1
    return "".join(lines)


# -- scripts the controller's configs call -----------------------------------------------------
def check_script_sh(scripts_dir: Path) -> str:
    """``vrrp/check_script.sh``: runs every check in ``scripts_dir``; fails when any of them fails."""
    folder = shlex.quote(str(scripts_dir))
    return f"""#!/bin/bash
# keepalived's track_script: every check in {scripts_dir} must pass.
shopt -s nullglob
failed=0
for file in {folder}/*; do
    echo "Running check script: $file"
    bash "$file"
    failed=$((failed + $?))
done
[ "$failed" -eq 0 ]
"""


def haproxy_check_sh(python: str, checker: Path, sockets: Iterable[Path]) -> str:
    """``haproxy_check_script.sh``: every running load balancer's stats socket must answer."""
    argv = " ".join(shlex.quote(str(arg)) for arg in [python, "-I", "-S", checker, *sockets])
    return f"#!/bin/bash\n{argv}\nexit $?\n"


NOTHING_TO_SERVE_SH = "#!/bin/bash\n# No load balancer and no LVS listener: stay BACKUP.\nexit 1\n"


def lvs_check_sh(lvs_dir: Path) -> str:
    """``lvs_udp_check.sh``: every LVS listener that should run has a live keepalived."""
    folder = shlex.quote(str(lvs_dir))
    return f"""#!/bin/bash
# Fails while an LVS listener that should run has no live keepalived.
failed=0
for marker in {folder}/octavia-keepalivedlvs-*.running; do
    [ -e "$marker" ] || continue
    pid=$(head -n 1 "${{marker%.running}}.pid" 2>/dev/null)
    state=$(sed -E 's/^.*\\) ([A-Za-z]).*$/\\1/' "/proc/${{pid:-0}}/stat" 2>/dev/null)
    case "$state" in ''|Z|X) failed=$((failed + 1)) ;; esac
done
[ "$failed" -eq 0 ]
"""


def python_script_sh(python: str, script: Path) -> str:
    """A wrapper that runs a standard-library-only Python script (``amphora-health-checker``)."""
    return f'#!/bin/sh\nexec {shlex.quote(python)} -I -S {shlex.quote(str(script))} "$@"\n'


UDP_CHECK_SH = """#!/bin/bash
# UDP-CONNECT health check of one member: nc reports success unless an ICMP unreachable comes back.
case "$(nc --version 2>&1)" in
    *nmap*) wait_opt=-i1 ;;
    *) wait_opt=-w1 ;;
esac
nc -uzv $wait_opt "$1" "$2" >/dev/null 2>&1
exit $?
"""
