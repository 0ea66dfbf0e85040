#!/bin/sh
# fleetpilot agent installer, served by the control plane at /install.sh:
#   curl -fsSL https://FLEETPILOT/install.sh | sudo sh -s -- --token ENROLLMENT_TOKEN
# Options: --token T (required), --node-id ID (default: host name), --deployment NS/NAME, --engine-url URL
# (repeatable), --root DIR (install under DIR instead of /, e.g. to try it out; no service is started then).
# Installs the agent binary, exchanges the enrollment token for this node's own credential, writes
# /etc/fleetpilot/agent.toml (mode 600) and a systemd unit, and starts it.
set -eu
SERVER="__FLEETPILOT_SERVER__"
TOKEN=""; ROOT="/"; NODE_ID="$(hostname 2>/dev/null || cat /etc/hostname)"; DEPLOYMENT=""; ENGINE_URLS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --token) TOKEN="$2"; shift 2 ;;
    --root) ROOT="$2"; shift 2 ;;
    --node-id) NODE_ID="$2"; shift 2 ;;
    --deployment) DEPLOYMENT="$2"; shift 2 ;;
    --engine-url) ENGINE_URLS="${ENGINE_URLS:+$ENGINE_URLS, }\"$2\""; shift 2 ;;
    --server) SERVER="$2"; shift 2 ;;
    *) echo "fleetpilot install: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$TOKEN" ] || { echo "fleetpilot install: --token ENROLLMENT_TOKEN is required" >&2; exit 2; }
case "$NODE_ID" in *[!A-Za-z0-9._-]*|"") echo "fleetpilot install: --node-id must be letters, digits, '.', '-', '_'" >&2; exit 2 ;; esac
command -v curl >/dev/null 2>&1 || { echo "fleetpilot install: curl is required" >&2; exit 1; }

BIN="$ROOT/usr/local/bin"; ETC="$ROOT/etc/fleetpilot"; UNIT="$ROOT/etc/systemd/system"; SPOOL="/var/lib/fleetpilot/spool"
mkdir -p "$BIN" "$ETC" "$UNIT" "$ROOT$SPOOL"
curl -fsSL "$SERVER/download/fleetpilot-agent" -o "$BIN/fleetpilot-agent.new"
chmod 755 "$BIN/fleetpilot-agent.new"
mv "$BIN/fleetpilot-agent.new" "$BIN/fleetpilot-agent"

RESPONSE=$(curl -fsS -X POST "$SERVER/api/v1/enroll" -H 'content-type: application/json' \
  -d "{\"enrollment_token\": \"$TOKEN\", \"node_id\": \"$NODE_ID\", \"hostname\": \"$NODE_ID\"}") || {
  echo "fleetpilot install: enrollment refused (token unknown, expired or used up?)" >&2; exit 1; }
CREDENTIAL=$(printf '%s' "$RESPONSE" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$CREDENTIAL" ] || { echo "fleetpilot install: unexpected enrollment answer: $RESPONSE" >&2; exit 1; }

umask 077
{
  echo "# written by the fleetpilot installer"
  echo "server_url = \"$SERVER\""
  echo "token = \"$CREDENTIAL\""
  echo "agent_id = \"$NODE_ID\""
  echo "spool_dir = \"${ROOT%/}$SPOOL\""
  [ -n "$DEPLOYMENT" ] && echo "deployment = \"$DEPLOYMENT\""
  [ -n "$ENGINE_URLS" ] && echo "engine_urls = [$ENGINE_URLS]"
} > "$ETC/agent.toml.new"
mv "$ETC/agent.toml.new" "$ETC/agent.toml"
umask 022
cat > "$UNIT/fleetpilot-agent.service" <<UNIT
[Unit]
Description=fleetpilot GPU agent
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/fleetpilot-agent run --config /etc/fleetpilot/agent.toml
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT

if [ "$ROOT" = "/" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable --now fleetpilot-agent
  echo "fleetpilot agent installed and running as node $NODE_ID"
else
  echo "fleetpilot agent installed under $ROOT as node $NODE_ID (service not started)"
fi
