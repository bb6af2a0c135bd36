"""The system's sysctl.d files read as ``sysctl --system`` reads them, and what the haproxy namespace
takes from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from amphora_agent.network import apply
from amphora_agent.system import sysctl_files
from amphora_agent.system.sysctl_files import Setting

IMAGE_SYSCTLS = Path(__file__).resolve().parents[2] / "image" / "rootfs" / "etc" / "sysctl.d"


def test_lines_as_sysctl_reads_them() -> None:
    text = (
        "# comment\n; other\n\nnet.ipv4.ip_nonlocal_bind = 1\n-net.netfilter.x=5\n"
        "net/core/somaxconn= 7\nbad\nnet.ipv4.conf.*.rp_filter = 2\n"
    )
    assert sysctl_files.parse(text) == [
        Setting("net.ipv4.ip_nonlocal_bind", "1"),
        Setting("net.netfilter.x", "5", optional=True),
        Setting("net.core.somaxconn", "7"),
    ]


def test_an_earlier_folder_hides_a_name_and_sysctl_conf_comes_last(tmp_path: Path) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    for folder in (etc, lib):
        folder.mkdir()
    (etc / "50-a.conf").write_text("net.a = etc\n")
    (lib / "50-a.conf").write_text("net.a = lib\n")
    (lib / "10-b.conf").write_text("net.b = lib\n")
    (tmp_path / "sysctl.conf").write_text("net.b = conf\n")
    found = sysctl_files.declared((etc, lib, tmp_path / "missing"), tmp_path / "sysctl.conf")
    assert found == [Setting("net.b", "lib"), Setting("net.a", "etc"), Setting("net.b", "conf")]


def test_the_namespace_gets_the_images_network_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    image = sysctl_files.declared((IMAGE_SYSCTLS,), IMAGE_SYSCTLS / "missing")
    assert Setting("net.ipv4.ip_nonlocal_bind", "1") in image
    monkeypatch.setattr(sysctl_files, "declared", lambda: image)
    settings = apply.namespace_settings()
    assert ("net.ipv4.ip_nonlocal_bind", "1") in settings and ("net.core.somaxconn", "65534") in settings
    assert not any(key.startswith("fs.") for key, _ in settings)  # the whole system's: never per namespace
    assert settings[-len(apply.NAMESPACE_SYSCTLS) :] == list(apply.NAMESPACE_SYSCTLS)
