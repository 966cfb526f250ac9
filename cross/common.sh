# shellcheck shell=sh disable=SC2034
# Shared helpers for cross/ and qemu/ (POSIX sh, sourced; needs root).
#
#   CROSS_CACHE   where roots, ccache and pip caches live between builds
#                 (default /var/cache/mycelium-cross; never inside the repo)
#   ARCH          arm64 (default) or armhf
#
# A root is an mmdebstrap'ed Debian bookworm for $ARCH, run through qemu-user
# and binfmt, with a venv at /opt/venv holding the project's runtime and test
# dependencies. It is rebuilt only when cross/root-packages.txt or
# packaging/requirements*.txt change (a stamp records their hash).

set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
CROSS_CACHE=${CROSS_CACHE:-/var/cache/mycelium-cross}
ARCH=${ARCH:-arm64}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$CROSS_CACHE/root-$ARCH

case $ARCH in
  arm64) QEMU_BIN=qemu-aarch64; DEB_TRIPLET=aarch64-linux-gnu; UNAME_M=aarch64 ;;
  armhf) QEMU_BIN=qemu-arm; DEB_TRIPLET=arm-linux-gnueabihf; UNAME_M=armv7l ;;
  *) echo "ARCH must be arm64 or armhf, not $ARCH" >&2; exit 2 ;;
esac

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$ARCH" "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "this needs root (mmdebstrap, chroot, binfmt); run it with sudo" >&2
    exit 2
  fi
}

# Host packages: qemu-user + binfmt, mmdebstrap; idempotent.
host_tools() {
  missing=
  for p in qemu-user-static binfmt-support mmdebstrap; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    log "installing host packages:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086 # a list of names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
  enable_binfmt
}

enable_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  update-binfmts --enable >/dev/null 2>&1 || true
  if [ ! -e "/proc/sys/fs/binfmt_misc/$QEMU_BIN" ]; then
    update-binfmts --enable "$QEMU_BIN" >/dev/null 2>&1 || true
  fi
  [ -e "/proc/sys/fs/binfmt_misc/$QEMU_BIN" ] || {
    echo "binfmt for $QEMU_BIN is not registered (is qemu-user-static installed?)" >&2
    exit 3
  }
}

venv_stamp() {
  cat "$REPO/packaging/requirements-runtime.txt" "$REPO/packaging/requirements-test.txt" |
    sha256sum | cut -c1-16
}

# Run a command inside $ROOT with /proc, /dev, /sys and the caches mounted;
# the mounts live in a private mount namespace and vanish with it.
in_root() {
  mkdir -p "$CROSS_CACHE/pip-$ARCH" "$CROSS_CACHE/ccache-$ARCH" "$ROOT/root/.cache/pip" \
           "$ROOT/root/.cache/ccache"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  # the host's CA bundle (it may hold a proxy's CA that the root's lacks), for pip
  cp -L "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/ssl/host-ca.crt" \
    2>/dev/null || true
  unshare --mount --propagation private -- sh -eu -c '
    R=$1; C=$2; A=$3; shift 3
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"
    mount --rbind /sys "$R/sys"
    mount -t tmpfs tmpfs "$R/tmp"
    mount --bind "$C/pip-$A" "$R/root/.cache/pip"
    mount --bind "$C/ccache-$A" "$R/root/.cache/ccache"
    if [ -n "${XCC_TRIPLET:-}" ]; then
      # the host'"'"'s x86_64 cross compiler, run natively inside the root: its
      # loader, libraries and files bind-mounted where it looks for them
      for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/gcc-cross \
               "/usr/$XCC_TRIPLET" "/usr/libexec/gcc-cross"; do
        [ -d "$d" ] || continue
        mkdir -p "$R$d"; mount --bind -o ro "$d" "$R$d"
      done
      # the x86_64 loader is /lib64/ld-linux-x86-64.so.2: an arm64 root has no /lib64
      [ -e "$R/lib64" ] || [ -L "$R/lib64" ] || ln -s usr/lib64 "$R/lib64"
      mkdir -p "$R/opt/xcc"
      for f in /usr/bin/"$XCC_TRIPLET"-* /usr/bin/ccache; do
        t=$R/usr/bin/$(basename "$f")
        [ "$f" = /usr/bin/ccache ] && t=$R/opt/xcc/ccache
        [ -e "$t" ] || : > "$t"
        mount --bind -o ro "$(readlink -f "$f")" "$t"
      done
    fi
    exec chroot "$R" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
      PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
      PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
      PIP_CERT=/etc/ssl/host-ca.crt SSL_CERT_FILE=/etc/ssl/host-ca.crt \
      ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} \
      ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${https_proxy:+https_proxy=$https_proxy} \
      ${HTTP_PROXY:+HTTP_PROXY=$HTTP_PROXY} ${http_proxy:+http_proxy=$http_proxy} \
      CCACHE_DIR=/root/.cache/ccache ${XCC_ENV:-} "$@"
  ' in_root "$ROOT" "$CROSS_CACHE" "$ARCH" "$@"
}

# Copy the work tree (tracked and untracked-but-not-ignored files) to $ROOT/src.
sync_src() {
  rm -rf "$ROOT/src"
  mkdir -p "$ROOT/src"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
     tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$ROOT/src"
}

root_packages() {
  grep -v '^#' "$REPO/cross/root-packages.txt" | awk -v a="$ARCH" \
    '$1 == "all" || $1 == a { print $2 }'
}

# Build (or reuse) the root. Idempotent; prints nothing when reused.
# cross/root-packages.txt changed: the new packages are installed into the
# existing root (a fresh one only when there is none); packaging/requirements-
# runtime.txt or -test.txt changed: /opt/venv is made again.
ensure_root() {
  need_root
  host_tools
  base=$(sha256sum < "$REPO/cross/root-packages.txt" | cut -c1-16)
  venv=$(venv_stamp)
  if [ "$(cat "$ROOT/.mycelium-base" 2>/dev/null)" = "$base" ] &&
     [ "$(cat "$ROOT/.mycelium-venv" 2>/dev/null)" = "$venv" ] &&
     [ -x "$ROOT/opt/venv/bin/python" ]; then
    return 0
  fi
  mkdir -p "$CROSS_CACHE"
  t0=$(date +%s)
  if [ ! -f "$ROOT/.mycelium-base" ]; then
    rm -rf "$ROOT.new"
    pkgs=$(root_packages | paste -sd, -)
    log "mmdebstrap $SUITE $ARCH ($pkgs)"
    mmdebstrap --quiet --arch="$ARCH" --variant=apt --include="$pkgs" \
      --aptopt='APT::Install-Recommends "false"' \
      "$SUITE" "$ROOT.new" "$MIRROR" >&2
    echo "$base" > "$ROOT.new/.mycelium-base"
    rm -rf "$ROOT"
    mv "$ROOT.new" "$ROOT"
    log "root made in $(($(date +%s) - t0)) s"
  elif [ "$(cat "$ROOT/.mycelium-base")" != "$base" ]; then
    log "installing the root's new packages"
    # shellcheck disable=SC2046 # a list of names
    in_root sh -euc 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$@" >/dev/null' sh $(root_packages)
    echo "$base" > "$ROOT/.mycelium-base"
  fi
  if [ "$(cat "$ROOT/.mycelium-venv" 2>/dev/null)" != "$venv" ] ||
     [ ! -x "$ROOT/opt/venv/bin/python" ]; then
    t1=$(date +%s)
    log "making /opt/venv"
    rm -f "$ROOT/.mycelium-venv"
    rm -rf "$ROOT/opt/venv"
    mkdir -p "$ROOT/opt/req"
    cp "$REPO/packaging/requirements-runtime.txt" "$REPO/packaging/requirements-test.txt" \
       "$ROOT/opt/req/"
    in_root sh -euc '
      python3 -m venv /opt/venv
      /opt/venv/bin/pip install -q -r /opt/req/requirements-runtime.txt \
        -r /opt/req/requirements-test.txt'
    echo "$venv" > "$ROOT/.mycelium-venv"
    log "venv made in $(($(date +%s) - t1)) s"
  fi
}

# The arm64 VM's root: a copy of the build root plus Debian's arm64 kernel and
# an initramfs that loads virtio and ext4 (qemu/budget.sh, qemu/powercut.sh).
# Sets VM; made once, kept in $CROSS_CACHE/vm-arm64.
vm_root_arm64() {
  VM=$CROSS_CACHE/vm-arm64
  if [ ! -f "$VM/.mycelium-vm" ]; then
    t0=$(date +%s)
    log "making the VM root $VM (a copy of $ROOT plus Debian's arm64 kernel)"
    rm -rf "$VM"
    cp -a "$ROOT" "$VM"
    rm -rf "$VM/src"
    # modules the initramfs loads before it looks for root=/dev/vda
    mkdir -p "$VM/etc/initramfs-tools"
    printf 'virtio_pci\nvirtio_mmio\nvirtio_blk\next4\n' >> "$VM/etc/initramfs-tools/modules"
    ROOT=$VM in_root sh -euc 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends linux-image-arm64 initramfs-tools udev kmod mount >/dev/null'
    : > "$VM/.mycelium-vm"
    log "VM root made in $(($(date +%s) - t0)) s"
  fi
}
