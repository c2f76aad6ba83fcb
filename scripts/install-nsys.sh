#!/usr/bin/env bash
# Unpack Debian's Nsight Systems 2023.4 (packages nsight-systems, nsight-systems-target from
# trixie non-free) and libssh-4 into DEST (default .tools/nsys), without installing anything
# system-wide and without touching the system's apt state: a temporary source list (reusing
# this machine's own Debian mirror), temporary package lists and cache, `apt-get download`,
# then `dpkg -x`. Idempotent: a second run with a working DEST does nothing.
# Works as root or not. Environment: DSOCR_DEBIAN_MIRROR=URI overrides the mirror.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
dest="${1:-$repo/.tools/nsys}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

find_dirs() {
  nsys_bin="$(find "$dest" -path '*/target-linux-x64/nsys' -type f 2>/dev/null | head -n1 || true)"
  target_dir="${nsys_bin%/nsys}"
  host_dir="$(find "$dest" -type d -name 'host-linux-x64' 2>/dev/null | head -n1 || true)"
}

find_dirs
if [ -n "$nsys_bin" ] && [ -e "$host_dir/libssh.so" ] && [ -f "$dest/.complete" ]; then
  echo "install-nsys: already installed in $dest"
else
  for tool in apt-get dpkg python3; do
    command -v "$tool" >/dev/null || { echo "install-nsys: '$tool' not found; this script needs a Debian-like system with $tool" >&2; exit 3; }
  done
  if [ -n "${DSOCR_DEBIAN_MIRROR:-}" ]; then
    mirror="$DSOCR_DEBIAN_MIRROR"; suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  else
    read -r mirror suite < <(python3 "$here/debian_mirror.py") || { echo "install-nsys: could not read the Debian mirror from /etc/apt; set DSOCR_DEBIAN_MIRROR=URI" >&2; exit 3; }
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  # The system suite's main (for a libssh-4 built against this system's libraries) plus trixie non-free.
  {
    echo "deb [signed-by=$keyring] $mirror $suite main"
    echo "deb [signed-by=$keyring] $mirror trixie non-free"
  } >"$tmp/sources.list"
  apt_opts=(
    -o "Dir::Etc::sourcelist=$tmp/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$tmp/lists"
    -o "Dir::Cache=$tmp/cache"
    -o "Dir::Cache::pkgcache=$tmp/cache/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$tmp/cache/srcpkgcache.bin"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=$(id -un)"
    -o "Acquire::Languages=none"
  )
  echo "install-nsys: fetching package lists from $mirror ($suite main, trixie non-free) into a temporary directory"
  apt-get "${apt_opts[@]}" -qq update
  echo "install-nsys: downloading nsight-systems, nsight-systems-target, libssh-4"
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" -qq download nsight-systems nsight-systems-target libssh-4)
  for deb in "$tmp"/debs/*.deb; do
    dpkg -x "$deb" "$dest"
  done
  find_dirs
  [ -n "$nsys_bin" ] || { echo "install-nsys: the packages unpacked to $dest hold no target-linux-x64/nsys; see DEVELOPERS.md" >&2; exit 4; }
  [ -n "$host_dir" ] || { echo "install-nsys: no host-linux-x64 directory under $dest; see DEVELOPERS.md" >&2; exit 4; }
  libssh="$(find "$dest" -name 'libssh.so.4*' -type f | head -n1 || true)"
  [ -n "$libssh" ] || { echo "install-nsys: libssh-4 did not unpack a libssh.so.4 under $dest" >&2; exit 4; }
  # QdstrmImporter dlopens libssh.so: without it `nsys profile` leaves only a .qdstrm.
  # Relative links, so that DEST can be moved.
  rel_libssh="$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$libssh" "$host_dir")"
  ln -sfn "$rel_libssh" "$host_dir/libssh.so"
  ln -sfn "$rel_libssh" "$host_dir/libssh.so.4"
  # nsys looks for the importer in host-linux-x64 next to its own (resolved) target directory,
  # which the packages put elsewhere (usr/lib/nsight-systems/): link it there.
  sibling="$(dirname "$target_dir")/host-linux-x64"
  if [ ! -e "$sibling" ]; then
    ln -sfn "$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$host_dir" "$(dirname "$target_dir")")" "$sibling"
  fi
  touch "$dest/.complete"
fi
echo "install-nsys: nsys:       $nsys_bin"
echo "install-nsys: target dir: $target_dir"
echo "install-nsys: host dir:   $host_dir"
echo "install-nsys: reports:    $target_dir/reports"
echo "install-nsys: export DSOCR_NSYS_HOME=$dest"
