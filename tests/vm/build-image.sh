#!/bin/sh
# tests/vm/build-image.sh DIR: a disposable Debian 12 host for the managers'
# end-to-end tests, as a fresh VPS comes: systemd, OpenSSH's sshd with root
# login by key only, DHCP on its one NIC, Debian's kernel, nothing else
# (no sudo, no firewall, no fail2ban: provisioning adds what it needs).
#
# Writes into DIR (a cache: the tests reuse it while this script is unchanged):
#   base.img      ext4 root filesystem (raw; each boot writes to a qcow2 overlay)
#   vmlinuz, initrd.img   the guest's kernel, booted directly by qemu
#   id_ed25519    root's key (the public half is in the image)
#   host_ed25519.pub  the guest's host key, for known_hosts
#   stamp         this script's SHA-256: a changed script rebuilds the image
#
# Needs root (debootstrap), debootstrap, e2fsprogs, Debian's mirror. About
# two minutes. The image is built in DIR.tmp and renamed: an interrupted
# build leaves no half image behind.
set -eu
dir=$1
stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ] && [ -f "$dir/base.img" ]; then
	exit 0
fi
tmp=$dir.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
root=$tmp/root
mirror=${SLUICE_VM_MIRROR:-http://deb.debian.org/debian}

echo "vm: debootstrap bookworm into $root" >&2
debootstrap --variant=minbase \
	--include=systemd,systemd-sysv,dbus,openssh-server,linux-image-amd64,initramfs-tools,iproute2,procps,ca-certificates,apt-utils,less,kmod,udev \
	bookworm "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
	tail -20 "$tmp/debootstrap.log" >&2
	exit 1
}

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
echo sluice-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 sluice-vm\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
# QEMU's user-mode network: DHCP from 10.0.2.2, DNS at 10.0.2.3.
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/80-dhcp.network"
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
chroot "$root" systemctl enable systemd-networkd ssh >/dev/null 2>&1
# A VPS's root: key only.
ssh-keygen -q -t ed25519 -N '' -C sluice-vm-test -f "$tmp/id_ed25519"
mkdir -p "$root/root/.ssh"
cp "$tmp/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 700 "$root/root/.ssh"
chmod 600 "$root/root/.ssh/authorized_keys"
chroot "$root" passwd -l root >/dev/null
# The host keys openssh-server's postinst made: the tests know the
# ed25519 one (host_ed25519.pub) and check it strictly.
chroot "$root" systemctl mask systemd-timesyncd.service >/dev/null 2>&1 || true
cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$tmp/host_ed25519.pub"
cp "$root"/boot/vmlinuz-* "$tmp/vmlinuz"
cp "$root"/boot/initrd.img-* "$tmp/initrd.img"
chmod 644 "$tmp/vmlinuz" "$tmp/initrd.img"
rm -rf "$root/var/cache/apt/archives/"*.deb

echo "vm: ext4 image" >&2
mkfs.ext4 -q -F -L sluice-vm -d "$root" "$tmp/base.img" 4G
rm -rf "$root"
echo "$stamp" >"$tmp/stamp"
rm -rf "$dir"
mv "$tmp" "$dir"
