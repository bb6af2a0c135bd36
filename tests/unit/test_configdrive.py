"""The image's config-drive step on directory trees (no VM), and the lab's drive renderers."""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lab import configdrive

SCRIPT = Path(__file__).resolve().parents[2] / "image" / "configdrive.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("amphora_image_configdrive", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


step = _load()

FILES = {
    configdrive.SERVER_PEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    configdrive.CLIENT_CA: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",
    configdrive.AGENT_CONF: "[DEFAULT]\ndebug = False\n\n[health_manager]\nheartbeat_key = k&'<>\"\n",
    configdrive.RSYSLOG_CONF: configdrive.render_rsyslog(
        [configdrive.LogTarget("198.51.100.2", 10514)], [configdrive.LogTarget("198.51.100.2", 20514)]
    ),
}


def mode(path: Path) -> int:
    """Permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("user_data_form", [False, True])
def test_both_forms_place_the_same_files_with_safe_modes(tmp_path: Path, user_data_form: bool) -> None:
    """``files`` and ``write_files`` give identical files; keys and /etc/octavia 0600, folders 0700."""
    drive = configdrive.write_tree(tmp_path / "drive", FILES, "amp-1", user_data_form=user_data_form)
    root = tmp_path / "root"
    root.mkdir()
    assert step.main(["--drive", str(drive), "--root", str(root)]) == 0
    for path, text in FILES.items():  # YAML's block scalar ends a file without a newline with one
        expected = text if not user_data_form or text.endswith("\n") else text + "\n"
        assert (root / path.lstrip("/")).read_text() == expected
    assert mode(root / "etc/octavia/certs/server.pem") == 0o600
    assert mode(root / "etc/octavia/amphora-agent.conf") == 0o600
    assert mode(root / "etc/octavia/certs") == 0o700
    assert mode(root / "etc/rsyslog.d/10-rsyslog.conf") == 0o644


def test_every_boot_keeps_what_the_agent_changed_but_restores_what_is_missing(tmp_path: Path) -> None:
    """A config replaced through the API survives a reboot; a deleted file comes back; modes are fixed."""
    drive = configdrive.write_tree(tmp_path / "drive", FILES, "amp-1")
    root = tmp_path / "root"
    root.mkdir()
    state = root / "var/lib/amphora-image/config-drive.json"
    assert len(step.apply_drive(drive, root, state)) == 4
    conf = root / "etc/octavia/amphora-agent.conf"
    conf.write_text("[DEFAULT]\n# put by PUT /1.0/config\n")
    conf.chmod(0o644)
    (root / "etc/rsyslog.d/10-rsyslog.conf").unlink()
    assert step.apply_drive(drive, root, state) == [configdrive.RSYSLOG_CONF]
    assert conf.read_text() == "[DEFAULT]\n# put by PUT /1.0/config\n"
    assert mode(conf) == 0o600
    assert step.apply_drive(drive, root, state) == []
    assert sorted(json.loads(state.read_text())) == sorted(FILES)


def test_a_new_drive_content_is_applied(tmp_path: Path) -> None:
    """When the drive carries other content than last applied (a rebuilt VM), the file is rewritten."""
    root = tmp_path / "root"
    root.mkdir()
    state = root / "state.json"
    step.apply_drive(configdrive.write_tree(tmp_path / "d1", FILES, "amp-1"), root, state)
    changed = dict(FILES, **{configdrive.AGENT_CONF: "[DEFAULT]\ndebug = True\n"})
    assert step.apply_drive(configdrive.write_tree(tmp_path / "d2", changed, "amp-1"), root, state) == [
        configdrive.AGENT_CONF
    ]


def test_the_controller_user_data_matches_octavia_and_is_read_back() -> None:
    """render_user_data reproduces Octavia's template test; the parser inverts it, escapes included."""
    text = configdrive.render_user_data(
        {"/test/config/path": "[DEFAULT]\ndebug = False\n[haproxy_amphora]\n"}
    )
    assert text == (
        configdrive.USER_DATA_HEADER + "write_files:\n-   path: /test/config/path\n    content: |\n"
        "        [DEFAULT]\n        debug = False\n        [haproxy_amphora]\n\n"
        "runcmd:\n-   systemctl restart rsyslog\n-   service amphora-agent restart\n\ntimezone: UTC"
    )
    assert (
        configdrive.render_user_data({})
        == configdrive.USER_DATA_HEADER + "\nruncmd:\n-   systemctl restart rsyslog\n\n\ntimezone: UTC"
    )
    items = step.parse_write_files(configdrive.render_user_data(FILES))
    assert [item["path"] for item in items] == list(FILES)
    contents = [step.unescape_markup(item["content"]) for item in items]
    assert contents == [text if text.endswith("\n") else text + "\n" for text in FILES.values()]


def test_rsyslog_rendering_matches_octavia() -> None:
    """Two targets per kind: failover on the second, as Octavia's logging template test expects."""
    admin = [configdrive.LogTarget("192.0.2.17", 10514), configdrive.LogTarget("192.51.100.4", 10514)]
    tenant = [configdrive.LogTarget("192.0.2.7", 20514), configdrive.LogTarget("192.51.100.9", 20514)]
    text = configdrive.render_rsyslog(admin, tenant)
    assert text.startswith('ruleset(name="tenant_forwarding" queue.type="linkedList" queue.size="10000") {\n')
    assert text.count('action.execOnlyWhenPreviousIsSuspended="on")') == 2
    assert '}\nlocal0.=info call tenant_forwarding\n\nruleset(name="admin_forwarding"' in text
    assert text.endswith('"on")\n}\nlocal1.* call admin_forwarding')
    assert (
        configdrive.render_rsyslog([], [], configdrive.LogOptions(disable_local_log_storage=True))
        == "*.* stop"
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("#cloud-config\nwrite_files:\n  - path: /a\n    content: |-\n      x\n      y\n", {"/a": "x\ny"}),
        (
            "#cloud-config\nwrite_files:\n- path: '/b'\n  permissions: '0640'\n  content: \"q\"\nruncmd:\n",
            {"/b": "q"},
        ),
        ("#cloud-config\nwrite_files:\n-   path: /c\n    encoding: b64\n    content: aGk=\n", {"/c": "hi"}),
        ("#!/bin/sh\necho not cloud-config\n", {}),
    ],
)
def test_write_files_shapes(tmp_path: Path, doc: str, expected: dict[str, str]) -> None:
    """Indented or not, quoted scalars, block chomping, base64; other user_data is ignored."""
    (tmp_path / "openstack/latest").mkdir(parents=True)
    (tmp_path / "openstack/latest/user_data").write_text(doc)
    found = {f.path: f.content.decode() for f in step.files_from_user_data(tmp_path)}
    assert found == expected


@pytest.mark.parametrize("path", ["etc/x", "/etc/../x", "/", "/etc/octavia/./x"])
def test_paths_that_are_not_plain_absolute_paths_are_refused(path: str) -> None:
    """A drive cannot write outside a plain absolute path."""
    with pytest.raises(step.DriveError):
        step.checked_path(path)


def test_content_path_outside_the_drive_is_refused(tmp_path: Path) -> None:
    """``content_path`` may not climb out of ``openstack/``."""
    latest = tmp_path / "openstack/latest"
    latest.mkdir(parents=True)
    meta = {"files": [{"path": "/etc/x", "content_path": "/../../../etc/passwd"}]}
    (latest / "meta_data.json").write_text(json.dumps(meta))
    with pytest.raises(step.DriveError):
        step.files_from_metadata(tmp_path)
    assert step.main(["--drive", str(tmp_path), "--root", str(tmp_path / "root")]) == 1
