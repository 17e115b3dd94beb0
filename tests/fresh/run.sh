#!/bin/sh
# tests/fresh/run.sh: prove the README's promise on a brand-new Debian 12:
# debootstrap a minimal bookworm (main suite only, as bare as it gets) into
# build/fresh/, clone this repository into it, and run `make test` there as
# root with nothing else installed. Takes a few minutes; needs root and
# Debian's mirror. Not part of CI (CI already runs on a fresh clone), run by
# hand with `make fresh-test` after changing the install steps.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
root=$top/build/fresh/root
goal=${1:-test}

cleanup() {
	for m in proc sys dev; do umount -R "$root/$m" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

rm -rf "$top/build/fresh"
mkdir -p "$top/build/fresh"
echo "fresh: debootstrap bookworm (minbase) into $root"
debootstrap --variant=minbase --include=git,make,ca-certificates bookworm "$root" \
	http://deb.debian.org/debian >"$top/build/fresh/debootstrap.log" 2>&1
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/"
git clone -q "$top" "$root/src"
echo "fresh: make $goal inside"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
	/bin/sh -c "cd /src && make $goal"
