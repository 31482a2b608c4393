#!/bin/sh
# Keeps a node's containerd hosts directory pointed at sigmirror.
#
# Run by the DaemonSet in this directory (busybox sh), with the ConfigMap
# sigmirror-node-files and the CA ConfigMap sigmirror-ca in $SRC and the
# node's /etc/containerd/certs.d in $DEST. Every $INTERVAL seconds it copies
#   $SRC/sigmirror-ca.pem          -> $DEST/sigmirror-ca.pem
#   $SRC/<registry>.hosts.toml     -> $DEST/<registry>/hosts.toml
# (ConfigMap keys cannot hold "/", hence the flat names). The CA goes first,
# since the hosts files name it. Each file is written to a temporary name and
# renamed over the old one, because containerd re-reads hosts files on every
# pull and must never see half a file.
#
# It never deletes anything: removing the DaemonSet leaves nodes failing
# closed. It warns about hosts files it did not write whose `server` is not
# sigmirror's, since such a registry is pulled around sigmirror.
#
# ONCE=1 makes one pass and exits (tests/deploy.rs runs it that way).
set -eu

SRC=${SRC:-/config}
DEST=${DEST:-/host/etc/containerd/certs.d}
INTERVAL=${INTERVAL:-60}
ONCE=${ONCE:-}

# put SRC_FILE DEST_FILE: replace DEST_FILE atomically when it differs.
put() {
  if cmp -s "$1" "$2"; then
    return 0
  fi
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.sigmirror-tmp"
  chmod 0644 "$2.sigmirror-tmp"
  mv -f "$2.sigmirror-tmp" "$2"
  echo "wrote $2"
}

sync_once() {
  if [ ! -s "$SRC/sigmirror-ca.pem" ]; then
    echo "no $SRC/sigmirror-ca.pem: create the ConfigMap sigmirror-ca (README)" >&2
    return 1
  fi
  put "$SRC/sigmirror-ca.pem" "$DEST/sigmirror-ca.pem"
  ours=$(grep -m1 '^server' "$SRC/_default.hosts.toml")
  for f in "$SRC"/*.hosts.toml; do
    registry=$(basename "$f" .hosts.toml)
    put "$f" "$DEST/$registry/hosts.toml"
  done
  for f in "$DEST"/*/hosts.toml; do
    [ -e "$f" ] || continue
    registry=$(basename "$(dirname "$f")")
    [ -e "$SRC/$registry.hosts.toml" ] && continue
    if [ "$(grep -m1 '^server' "$f" || true)" != "$ours" ]; then
      echo "WARNING: $f is not sigmirror's ($ours): pulls from $registry bypass sigmirror" >&2
    fi
  done
}

if [ -n "$ONCE" ]; then
  sync_once
  exit
fi
# PID 1 in a container has no default signal handlers: exit on TERM
# ourselves instead of waiting out the grace period.
trap 'exit 0' TERM INT
while :; do
  sync_once || echo "sync failed; retrying in ${INTERVAL}s" >&2
  sleep "$INTERVAL" &
  wait $! || true
done
