#!/usr/bin/env bash
# Builds a JDK root filesystem (~290 MB) in $1 from this machine's own JDK (the one `javac`
# belongs to): busybox for a shell, the JDK with its symlinks resolved, the libraries its
# programs need, and /app/Hello.class. Prints the image command to start it, for
# `shaped-link --rootfs DIR --cmd JSON` or `skiff image import --change "CMD JSON"`.
set -euo pipefail
dst=${1:?usage: make-jdk-rootfs.sh DIR}
javac=$(readlink -f "$(command -v javac)") || { echo "no javac on this machine" >&2; exit 1; }
jdk=$(dirname "$(dirname "$javac")")
mkdir -p "$dst"/{bin,etc,tmp,app,lib64,lib/x86_64-linux-gnu,usr/lib/jvm,proc,sys,dev}
chmod 1777 "$dst/tmp"
cp /bin/busybox "$dst/bin/busybox"
for a in sh ls cat echo; do ln -sf busybox "$dst/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$dst/etc/passwd"
printf 'root:x:0:\n' > "$dst/etc/group"
# Debian's JDK links into /etc and /usr/share; some links (src.zip) point nowhere.
cp -rL "$jdk" "$dst/usr/lib/jvm/" 2>/dev/null || true
name=$(basename "$jdk")
for lib in $(ldd "$jdk/bin/java" "$jdk/lib/server/libjvm.so" "$jdk"/lib/*.so 2>/dev/null \
    | awk '$3 ~ /^\// {print $3}' | sort -u); do
  cp -L "$lib" "$dst/lib/x86_64-linux-gnu/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$dst/lib64/"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
printf 'public class Hello { public static void main(String[] a) { System.out.println("hello from java " + System.getProperty("java.version")); } }\n' > "$src/Hello.java"
"$jdk/bin/javac" -d "$dst/app" "$src/Hello.java"
du -sh "$dst" >&2
echo "[\"/usr/lib/jvm/$name/bin/java\",\"-cp\",\"/app\",\"Hello\"]"
