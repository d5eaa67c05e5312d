#!/usr/bin/env bash
# The whole test suite: installs what the tests run for real (ZooKeeper, HAProxy, Chromium for the UI) when
# missing, then checks
# formatting and lints and runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
[ -e /usr/share/zookeeper/zookeeper.jar ] || ls /usr/share/java/zookeeper*.jar >/dev/null 2>&1 || need+=(zookeeper)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# pgrep/pkill: the HAProxy tests check that a killed command's processes are gone and stop the HAProxy they start.
command -v pkill >/dev/null 2>&1 || need+=(procps)
# systemd-analyze: the packaging test verifies the systemd unit.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# tini and unshare: the packaging test runs rattan under the image's init in a PID namespace.
command -v tini >/dev/null 2>&1 || need+=(tini)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The proxy stays split by role: no function in src/proxy over clippy's 100 lines.
long=$(cargo clippy --lib --locked -- -W clippy::too_many_lines 2>&1 | grep -A1 'too many lines' | grep -- '--> src/proxy/' || true)
if [ -n "$long" ]; then echo "$long"; exit 1; fi
cargo test --locked --all-targets
# The Dockerfile's build stage, replayed without Docker.
bash tests/docker-steps.sh
