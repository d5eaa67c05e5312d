#!/usr/bin/env bash
# The Dockerfile's build stage, run as a script (no Docker daemon in CI, no hadolint in Debian): its COPY, ARG, ENV
# and RUN lines replayed in order in a scratch directory standing in for the image's WORKDIR, so a step that breaks
# (a file the dependency layer needs, the stub sources, the real build) fails CI. Debug profile, to keep CI short;
# the binary it makes must run. The final stage (apt-get, useradd, setcap) is checked by tests/packaging.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$repo/target/docker-steps"
# The build stage: from the first FROM to the next, continuation lines joined.
stage=$(awk '/^FROM /{n++; next} n==1' Dockerfile | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -v '^\s*#' | grep -v '^\s*$')
cd "$work"
while IFS= read -r line; do
  set -- $line
  op=$1; shift
  case "$op" in
    WORKDIR) ;;   # the scratch directory is the workdir
    COPY)
      args=("$@"); dest=${args[-1]}; unset 'args[-1]'
      # Docker's COPY: a directory's contents into the destination, files into it when it ends in `/`.
      for src in "${args[@]}"; do
        if [ -d "$repo/$src" ]; then
          mkdir -p "$work/$dest" && cp -r "$repo/$src/." "$work/$dest/"
        else
          mkdir -p "$work/$dest" && cp "$repo/$src" "$work/$dest/"
        fi
      done ;;
    ARG) name=${1%%=*}; [ -n "${!name:-}" ] || export "$1" ;;
    ENV) eval "export ${*}" ;;
    RUN)
      cmd=${line#RUN }
      echo "docker-steps: RUN $cmd" >&2
      bash -euo pipefail -c "${cmd//--release/}" ;;
    *) echo "docker-steps: $op not handled" >&2; exit 1 ;;
  esac
done <<< "$stage"
"$CARGO_TARGET_DIR/debug/rattan" --version
echo "docker-steps: the build stage ran"
