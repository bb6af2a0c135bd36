"""The deprecated ``user_data_config_drive`` form: the same four files as cloud-init write_files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import configdrive, vm
from lab.amphora_vm import AMPHORA_ID, Controller, boot_amphora

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


@pytest.mark.usefixtures("shared_vm")  # the other modules' VM boots meanwhile
def test_user_data_form_provisions_the_agent(
    vm_image: Path, lab_net: tuple[vm.VmLab, Controller], fixtures_dir: Path
) -> None:
    """Booted with write_files user_data only, the agent answers and the files match, unescaped."""
    net, controller = lab_net
    boot = boot_amphora(
        net, vm_image, controller, fixtures_dir, user_data_form=True, name="userdata", mac="fa:16:3e:00:00:02"
    )
    with boot as amp:
        with controller.client(amp.address) as api:
            assert api.info().get("uuid") in (AMPHORA_ID, None)
        # quotes, not the &#34; the controller's template put there; YAML's block adds a final newline
        for path in (configdrive.RSYSLOG_CONF, configdrive.AGENT_CONF):
            assert amp.guest("cat", path) == amp.files[path].removesuffix("\n") + "\n"
        assert amp.guest("stat", "-c", "%a", configdrive.SERVER_PEM).strip() == "600"
        assert "&#34;" in configdrive.render_user_data(amp.files)  # the controller did escape them
