#!/usr/bin/env bash
# Build the amphora image: Debian 12 packages + the project's wheel from the working tree, as a
# bootable disk (MBR, syslinux, ext4 root) and, for Glance, a compressed qcow2. See docs/image.md.
#
#   image/build.sh            build/amphora-<version>.raw and build/amphora-<version>.qcow2
#   image/build.sh --test     build/amphora-<version>-test.raw (+ qemu-guest-agent), no qcow2
#   options: --qcow2 / --no-qcow2, --force (ignore the cache), --print-path (only print the raw path),
#            --check (exit 3 instead of building when the image is not current: the test suite runs
#            without a network, so `make test` builds before pytest)
#
# A build is skipped when build/<name>.inputs holds the hash of every input (src/, image/,
# pyproject.toml, README.md, the variant): `make test` calls this on every run for free.
# Debian packages are cached in $AMPHORA_IMAGE_CACHE (default /var/cache/amphora-image), Python
# wheels in pip's own cache. Needs root (mmdebstrap root mode, chroot hooks; no mounts, no loop).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE="$ROOT/image"
variant=production
qcow2=1
force=0
print_path=0
check=0
for arg in "$@"; do
  case "$arg" in
    --test) variant=test; qcow2=0 ;;
    --qcow2) qcow2=1 ;;
    --no-qcow2) qcow2=0 ;;
    --force) force=1 ;;
    --print-path) print_path=1 ;;
    --check) check=1 ;;
    *) echo "image/build.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")
NAME="amphora-$VERSION"
[ "$variant" = test ] && NAME="$NAME-test"
OUT=${AMPHORA_IMAGE_OUT:-$ROOT/build}
CACHE=${AMPHORA_IMAGE_CACHE:-/var/cache/amphora-image}
RAW="$OUT/$NAME.raw"
QCOW2="$OUT/$NAME.qcow2"
STAMP="$OUT/$NAME.inputs"

BOOT_MIB=64     # FAT partition: syslinux, kernel, initramfs
ROOT_MIB=1536   # ext4 root
ROOT_UUID=6f2b1c3e-8d7a-4e51-9a1f-0c2d3e4f5a6b  # fixed: the kernel command line names it

inputs_hash() {
  (
    cd "$ROOT"
    find src image pyproject.toml README.md docs/openapi.yaml -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "variant=$variant"
  ) | sha256sum | cut -d' ' -f1
}

hash=$(inputs_hash)
done_already() {
  [ "$force" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ] && [ -f "$RAW" ] \
    && { [ "$qcow2" = 0 ] || [ -f "$QCOW2" ]; }
}
if done_already; then
  [ "$print_path" = 1 ] && echo "$RAW" || echo "image: $RAW is current (inputs $hash)"
  exit 0
fi
if [ "$check" = 1 ]; then
  echo "image: $RAW is missing or older than its inputs: run make vm-image (or image/build.sh --test)" >&2
  exit 3
fi
[ "$(id -u)" = 0 ] || { echo "image/build.sh: needs root (mmdebstrap, chroot)" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy syslinux sfdisk qemu-img; do
  command -v "$tool" >/dev/null || { echo "image/build.sh: $tool missing (scripts/bootstrap.sh installs it)" >&2; exit 1; }
done

log() { printf 'image: [%3ds] %s\n' "$SECONDS" "$*" >&2; }
mkdir -p "$OUT" "$CACHE/debs"
WORK=$(mktemp -d "$OUT/.$NAME.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -f "$STAMP"

# 1. The project's wheel from the working tree (built from a copy: no build/ or egg-info left in
#    the tree) and every dependency as a wheel; the guest's Python (3.11) is the host's.
log "wheels"
mkdir -p "$WORK/src" "$WORK/wheels"
cp -rL "$ROOT/src" "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/src/"
find "$WORK/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
"$ROOT/.venv/bin/python" -m pip wheel -q --disable-pip-version-check -w "$WORK/wheels" "$WORK/src" \
  >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; exit 1; }

# 2. The root tree: packages, our files, the venv, then trimmed.
packages=$(sed -e 's/#.*//' "$HERE/packages.txt" | xargs | tr ' ' ',')
if [ "$variant" = test ]; then
  packages="$packages,$(sed -e 's/#.*//' "$HERE/packages-test.txt" | xargs | tr ' ' ',')"
fi
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
log "mmdebstrap ($variant)"
TREE="$WORK/root"
mmdebstrap --quiet --variant=apt --mode=root --format=directory \
  --include="$packages" \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --skip=download/empty --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives/partial"' \
  --setup-hook="sync-in '$CACHE/debs' /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives '$CACHE/debs'" \
  --customize-hook="cp -a '$HERE/rootfs/.' \"\$1/\"" \
  --customize-hook="install -D -m 0644 '$HERE/configdrive.py' \"\$1/usr/lib/amphora-image/configdrive.py\"" \
  --customize-hook="cp -r '$WORK/wheels' \"\$1/tmp/wheels\"" \
  --customize-hook="cp '$HERE/customize.sh' \"\$1/tmp/customize.sh\"" \
  --customize-hook="chroot \"\$1\" /bin/sh /tmp/customize.sh '$variant' '$ROOT_UUID'" \
  --customize-hook="chroot \"\$1\" dpkg-query -W -f='\${Package} \${Version}\n' > '$WORK/packages.txt'" \
  bookworm "$TREE" - < "$sources"

# 3. The disk: MBR + syslinux on a FAT boot partition (no mount, no loop device), ext4 root.
#    transparent_hugepage=never: with THP on, khugepaged raises min_free_kbytes to 44 MiB on a 1 GiB
#    VM (watermarks about 70 MiB that MemAvailable leaves out); haproxy and the agent gain nothing from it.
log "disk"
kernel=$(ls "$TREE"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$TREE"/boot/initrd.img-* | sort -V | tail -1)
BOOT="$WORK/boot.fat"
mkfs.vfat -n AMPBOOT -C "$BOOT" $((BOOT_MIB * 1024)) >/dev/null
cat > "$WORK/syslinux.cfg" <<EOF
DEFAULT amphora
PROMPT 0
TIMEOUT 0
LABEL amphora
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$ROOT_UUID ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 transparent_hugepage=never quiet
EOF
mcopy -i "$BOOT" "$kernel" ::/vmlinuz
mcopy -i "$BOOT" "$initrd" ::/initrd.img
mcopy -i "$BOOT" "$WORK/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$BOOT"
rm -rf "$TREE"/boot/vmlinuz-* "$TREE"/boot/initrd.img-* "$TREE"/boot/System.map-* \
  "$TREE"/vmlinuz* "$TREE"/initrd.img*   # they live on the boot partition

DISK="$WORK/disk.raw"
total_mib=$((1 + BOOT_MIB + ROOT_MIB))
truncate -s "${total_mib}M" "$DISK"
sfdisk --quiet "$DISK" <<EOF
label: dos
start=1MiB, size=${BOOT_MIB}MiB, type=c, bootable
start=$((1 + BOOT_MIB))MiB, size=${ROOT_MIB}MiB, type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$DISK" bs=440 count=1 conv=notrunc status=none
dd if="$BOOT" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none
mkfs.ext4 -q -F -L amphora-root -U "$ROOT_UUID" -m 1 -E offset=$(((1 + BOOT_MIB) * 1024 * 1024)) \
  -d "$TREE" "$DISK" "${ROOT_MIB}M"
mv "$DISK" "$RAW"

if [ "$qcow2" = 1 ]; then
  log "qcow2"
  qemu-img convert -c -m 2 -O qcow2 "$RAW" "$WORK/disk.qcow2"
  mv "$WORK/disk.qcow2" "$QCOW2"
fi
mv "$WORK/packages.txt" "$OUT/$NAME.packages"  # the manifest: what is inside, for operators and the bench
echo "$hash" > "$STAMP"
log "done: $RAW$([ "$qcow2" = 1 ] && echo " $QCOW2")"
[ "$print_path" = 1 ] && echo "$RAW"
exit 0
