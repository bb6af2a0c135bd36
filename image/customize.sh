#!/bin/sh
# Runs inside the new root tree (mmdebstrap customize hook, chroot), after the packages and the
# files of image/rootfs/: the agent's virtualenv, the units, a locked root, then trimming.
set -eu
variant=$1
root_uuid=$2

# The agent in its own venv, made by the guest's python so every path in it is the guest's.
python3 -m venv /opt/amphora-agent
/opt/amphora-agent/bin/pip install -q --no-index --no-cache-dir --find-links /tmp/wheels amphora-agent
/opt/amphora-agent/bin/pip uninstall -q -y pip setuptools
python3 -m compileall -q -j 0 /opt/amphora-agent/lib /usr/lib/amphora-image
for cmd in amphora-agent amphoractl amphora-heartbeat-listen; do
  ln -sf "/opt/amphora-agent/bin/$cmd" "/usr/local/bin/$cmd"
done
rm -rf /tmp/wheels /tmp/customize.sh
# only needed to make the venv
apt-get -qq -y purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl >/dev/null

# The agent supervises haproxy and keepalived itself: the distribution's services never start.
systemctl -q mask haproxy.service keepalived.service
systemctl -q enable systemd-networkd.service rsyslog.service \
  amphora-config-drive.service var-lib-octavia-certs.mount amphora-agent.service
# nothing periodic that an appliance does not need
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
  systemctl -q disable "$unit" 2>/dev/null || true
done
# no password and no sshd: text consoles serve nobody (the serial console still shows the boot)
systemctl -q mask getty@tty1.service getty-static.service
systemctl -q set-default multi-user.target

echo "UUID=$root_uuid / ext4 defaults,noatime,errors=remount-ro 0 1" > /etc/fstab
echo amphora > /etc/hostname
# the host name resolves locally: keepalived looks it up at every start (its default router_id),
# and a management network without a reachable DNS server would stall it for the resolver's timeouts
printf '127.0.0.1 localhost\n127.0.1.1 amphora\n::1 localhost ip6-localhost ip6-loopback\n' > /etc/hosts
usermod -p '!' root          # no password: nobody logs in; the controller drives the API
: > /etc/machine-id           # a new one on first boot of each VM
install -d -m 0700 /etc/octavia /etc/octavia/certs /var/lib/octavia/certs
chmod 0755 /var/lib/octavia/ping-wrapper.sh

# trim what an appliance never reads
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old \
  /var/log/*.log /var/log/apt/* /usr/share/doc-base /usr/share/bug /usr/share/bash-completion \
  /usr/share/zsh /usr/share/common-licenses /usr/share/X11 /usr/share/python-wheels
# modules for hardware a Nova VM never has (the cloud kernel is already small)
find /usr/lib/modules -type d \( -name sound -o -name wireless -o -name bluetooth -o -name media \
  -o -name gpu -o -name infiniband \) -prune -exec rm -rf {} +
for kver in $(ls /usr/lib/modules); do depmod -a "$kver"; done
# A small initramfs: only the drivers a Nova root disk needs (virtio-blk, virtio-scsi, SATA, IDE,
# NVMe; ext4 is built in). With Debian's MODULES=most it is 15 MB, and unpacking it took 15 s of a
# TCG boot; everything else (the config drive's cdrom, NICs) udev loads from the root filesystem.
sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod ahci ata_piix ata_generic nvme \
  > /etc/initramfs-tools/modules
update-initramfs -u -k all >/dev/null
echo "amphora image ($variant) customised"
