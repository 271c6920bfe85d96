#!/usr/bin/env bash
# Builds a large (~450 MB) root filesystem in $1 from this Debian machine's own files:
# busybox for a shell, python3 with its libraries, and bulky data most containers never
# read (gcc's libraries, locales, docs) — the shape of a typical "debian + python" image.
set -euo pipefail
dst=${1:?usage: make-demo-rootfs.sh DIR}
mkdir -p "$dst"/{bin,etc,tmp,root,usr/bin,usr/lib,usr/share,lib64,lib/x86_64-linux-gnu,proc,sys,dev}
chmod 1777 "$dst/tmp"
cp /bin/busybox "$dst/bin/busybox"
for a in sh ls cat echo sleep true false env id ps wc head sha256sum; do ln -sf busybox "$dst/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$dst/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$dst/etc/group"
cp -a /usr/bin/python3.11 "$dst/usr/bin/"; ln -sf python3.11 "$dst/usr/bin/python3"
for lib in $(ldd /usr/bin/python3.11 | awk '/=>/ {print $3}'); do cp -aL "$lib" "$dst/lib/x86_64-linux-gnu/"; done
cp -aL /lib64/ld-linux-x86-64.so.2 "$dst/lib64/"
cp -a /usr/lib/python3.11 "$dst/usr/lib/"
cp -a /usr/lib/gcc "$dst/usr/lib/"
cp -a /usr/share/locale /usr/share/doc "$dst/usr/share/"
du -sh "$dst"
