"""keepalived configs name only the controller's checks: every fixture passes, every other program,
file-creating keyword or hiding trick is refused with the line that holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from amphora_agent.keepalived.confinement import problems

BASE = "/var/lib/octavia"
KEEPALIVED_FIXTURES = ("keepalived/*.conf", "lvs/*.conf")


def fixture_configs(fixtures: Path) -> list[Path]:
    return sorted(path for pattern in KEEPALIVED_FIXTURES for path in fixtures.glob(pattern))


def test_every_controller_config_passes(fixtures_dir: Path) -> None:
    configs = fixture_configs(fixtures_dir)
    assert len(configs) >= 6
    for config in configs:
        assert problems(config.read_text(), BASE) == [], config.name


@pytest.mark.parametrize(
    "line",
    [
        'misc_path "/var/lib/octavia/lvs/check/udp_check.sh 10.0.0.1 53"',
        'misc_path "amphora-health-checker sctp -t 4 10.0.0.1 3868"',
        'misc_path "ping -q -n -w 5 -c 1 10.0.0.1"',
        "script /var/lib/octavia/vrrp/check_script.sh",
        'script "/var/lib/octavia/vrrp/check_script.sh"',
        "script",  # a track_script entry named "script"
        "    check_script  # a comment naming /etc/passwd",
        "! include /etc/passwd",
        "",
    ],
)
def test_the_controllers_lines_pass(line: str) -> None:
    assert problems(line, BASE) == []


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ('misc_path "/bin/sh -c id"', "misc_path runs /bin/sh"),
        ("script /usr/bin/touch /etc/x", "script runs /usr/bin/touch"),
        ('script "/var/lib/octavia/../../../bin/sh"', "script runs /var/lib/octavia/../../../bin/sh"),
        ("script /var/lib/octavia-other/x.sh", "script runs /var/lib/octavia-other/x.sh"),
        ('misc_path "relative.sh 1 2"', "misc_path runs relative.sh"),
        ('misc_path "$EVIL"', "misc_path runs $EVIL"),
        ("script '/bin/rm' -rf /", "script runs /bin/rm"),
        ('misc_path ""', "misc_path '': no program"),
        ("global_defs {", "global_defs:"),
        ("include /etc/keepalived/other.conf", "include:"),
        ("track_file /etc/passwd", "track_file:"),
        ('notify_master "/var/lib/octavia/x.sh"', "notify_master:"),
        ("notify /tmp/x", "notify:"),
        ("notify_up /tmp/x", "notify_up:"),
        ("vrrp_notify_fifo /etc/x", "vrrp_notify_fifo:"),
        ("$X=/bin/sh", "$X=/bin/sh: definitions"),
        ("~SEQ(i,1,3) script /bin/sh", "~SEQ(i,1,3): definitions"),
        ("@amphora script /bin/sh", "script runs /bin/sh"),
        ('script "/bin/sh', "an unbalanced quote"),
    ],
)
def test_anything_else_is_refused_with_its_line(line: str, said: str) -> None:
    found = problems(f"vrrp_script check {{\n{line}\n}}\n", BASE)
    assert len(found) == 1 and found[0].startswith("line 2: "), found
    assert said in found[0]
