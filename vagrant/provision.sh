#!/usr/bin/env bash
# Makes a Debian or Ubuntu machine ready for the workshop: the host tools,
# Node.js >= 20 and the project's npm packages. Idempotent: run it again any
# time. The Vagrant VM runs it at `vagrant up`; CI runs exactly this script.
#   sudo vagrant/provision.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "provision.sh needs root: sudo $0" >&2
  exit 1
fi

# Host tools, each for a step:
#   busybox-static debootstrap        step 01: root filesystems
#   util-linux (unshare nsenter setpriv script) procps psmisc   steps 02-04
#   iproute2 iptables nftables iputils-ping   step 05: bridge, veth, NAT
#   openssh-client                    step 07: log in to the jail
#   libseccomp2 libcap2-bin           step 08: libseccomp.so.2 builds the seccomp filter (through koffi);
#                                     capsh --decode reads the capability masks in /proc/PID/status
#   skopeo attr                       step 09: skopeo reads and copies the OCI images we export (the tests
#                                     check our layouts with it), getfattr shows overlayfs's opaque xattr;
#                                     runc (below) runs the bundles step 09 exports
#   jq python3                        step 09's exercises: read OCI JSON, craft a tar by hand
#   bubblewrap runc hyperfine         bench/: the tools a learner could use instead
#   qemu-system-x86 cpio kmod         npm run test:vm: a pure cgroup v2 kernel for step 06's tests
packages=(
  busybox-static debootstrap util-linux procps psmisc
  iproute2 iptables nftables iputils-ping
  openssh-client ca-certificates curl xz-utils
  libseccomp2 libcap2-bin
  skopeo attr jq python3
  bubblewrap runc hyperfine
  qemu-system-x86 cpio kmod
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "provision: installing ${missing[*]}"
  apt-get update -qq
  # --no-install-recommends: qemu would otherwise drag in a desktop's worth, and some packages a kernel
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm run test:vm boots the kernel of the host's distribution, fetched with
# `apt-get download`: that needs the package lists.
if [ -r /etc/debian_version ] && ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi

# Node.js >= 20. Debian 12 and Ubuntu 24.04 ship 18, so take the official
# build when apt has nothing new enough.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ]; then
  candidate=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ {print $2}' | sed -E 's/^[0-9]+://; s/\..*//')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && [ "$candidate" -ge 20 ] 2>/dev/null; then
    apt-get install -y -qq --no-install-recommends nodejs npm
  else
    version=v20.19.5
    arch=$(dpkg --print-architecture | sed 's/amd64/x64/')
    tarball="node-$version-linux-$arch.tar.xz"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "provision: installing Node.js $version from nodejs.org"
    curl -fsSL "https://nodejs.org/dist/$version/$tarball" -o "$tmp/$tarball"
    curl -fsSL "https://nodejs.org/dist/$version/SHASUMS256.txt" -o "$tmp/SHASUMS256.txt"
    (cd "$tmp" && grep " $tarball\$" SHASUMS256.txt | sha256sum -c -)
    tar -xJf "$tmp/$tarball" -C /usr/local --strip-components=1 --exclude='*.md' --exclude=LICENSE
  fi
fi
echo "provision: node $(node --version), npm $(npm --version)"

# A jail's init starts inside its new user namespace before its ID maps
# exist: it reaches the repo (its bundle, koffi) as an unprivileged stranger.
# Debian 12 makes home directories 0700; let others cross (not list) every
# directory above the repo.
d="$repo"
while [ "$d" != "/" ]; do
  d=$(dirname "$d")
  if [ -n "$(find "$d" -maxdepth 0 ! -perm -o=x)" ]; then
    echo "provision: chmod o+x $d (so a jail's init can reach the repo)"
    chmod o+x "$d"
  fi
done

# The project's packages, exactly as locked.
cd "$repo"
if [ ! -d node_modules ] || ! npm ls --omit=optional >/dev/null 2>&1; then
  npm ci --no-audit --no-fund
fi
echo "provision: ready. Try: sudo npm run doctor"
