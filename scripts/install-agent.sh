#!/bin/sh
# fleetpilot agent installer, served by the control plane at /install.sh:
#   curl -fsSL https://FLEETPILOT/install.sh | sudo sh -s -- --token ENROLLMENT_TOKEN
# Options: --token T (required), --node-id ID (default: host name), --deployment NS/NAME, --engine-url URL
# (repeatable), --root DIR (install under DIR instead of /, e.g. to try it out; no service is started then),
# --ca-file PEM (the control plane's private CA: curl and the agent trust only it), --allow-http (plain http
# to a host other than loopback; the token and the binary then travel unprotected).
# Installs the agent binary after checking its SHA-256 against the one the server publishes, exchanges the
# enrollment token for this node's own credential, writes /etc/fleetpilot/agent.toml (mode 600) and a systemd
# unit, and starts it.
set -eu
SERVER="__FLEETPILOT_SERVER__"
AGENT_SHA256="__FLEETPILOT_AGENT_SHA256__"
TOKEN=""; ROOT="/"; NODE_ID="$(hostname 2>/dev/null || cat /etc/hostname)"; DEPLOYMENT=""; ENGINE_URLS=""
CA_FILE=""; ALLOW_HTTP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --token) TOKEN="$2"; shift 2 ;;
    --root) ROOT="$2"; shift 2 ;;
    --node-id) NODE_ID="$2"; shift 2 ;;
    --deployment) DEPLOYMENT="$2"; shift 2 ;;
    --engine-url) ENGINE_URLS="${ENGINE_URLS:+$ENGINE_URLS, }\"$2\""; shift 2 ;;
    --server) SERVER="$2"; shift 2 ;;
    --ca-file) CA_FILE="$2"; shift 2 ;;
    --allow-http) ALLOW_HTTP=1; shift ;;
    *) echo "fleetpilot install: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$TOKEN" ] || { echo "fleetpilot install: --token ENROLLMENT_TOKEN is required" >&2; exit 2; }
case "$NODE_ID" in *[!A-Za-z0-9._-]*|"") echo "fleetpilot install: --node-id must be letters, digits, '.', '-', '_'" >&2; exit 2 ;; esac
command -v curl >/dev/null 2>&1 || { echo "fleetpilot install: curl is required" >&2; exit 1; }
case "$SERVER" in
  https://*) ;;
  http://127.0.0.1*|http://localhost*|http://\[::1\]*) ;;
  http://*)
    [ -n "$ALLOW_HTTP" ] || { echo "fleetpilot install: $SERVER is plain http: the enrollment token and the agent binary would travel unprotected. Serve the control plane over TLS (tls.cert_file, tls.key_file) or pass --allow-http." >&2; exit 2; } ;;
  *) echo "fleetpilot install: the server URL must start with https:// (got $SERVER)" >&2; exit 2 ;;
esac
CURL_TLS=""
if [ -n "$CA_FILE" ]; then
  [ -r "$CA_FILE" ] || { echo "fleetpilot install: --ca-file $CA_FILE is not readable" >&2; exit 2; }
  CURL_TLS="--cacert $CA_FILE"
fi
if command -v sha256sum >/dev/null 2>&1; then SHA256="sha256sum"
elif command -v shasum >/dev/null 2>&1; then SHA256="shasum -a 256"
else echo "fleetpilot install: sha256sum (coreutils) or shasum is required to check the agent binary" >&2; exit 1; fi

BIN="$ROOT/usr/local/bin"; ETC="$ROOT/etc/fleetpilot"; UNIT="$ROOT/etc/systemd/system"; SPOOL="/var/lib/fleetpilot/spool"
mkdir -p "$BIN" "$ETC" "$UNIT" "$ROOT$SPOOL"
# shellcheck disable=SC2086 # CURL_TLS is empty or two words
# Not baked in (the server had no binary when it served this script, or the script was copied raw): ask.
case "$AGENT_SHA256" in
  ""|_*) AGENT_SHA256=$(curl -fsS $CURL_TLS "$SERVER/download/fleetpilot-agent.sha256" | cut -d' ' -f1) || {
    echo "fleetpilot install: the server publishes no checksum for the agent binary" >&2; exit 1; } ;;
esac
# shellcheck disable=SC2086
curl -fsSL $CURL_TLS "$SERVER/download/fleetpilot-agent" -o "$BIN/fleetpilot-agent.new"
GOT=$($SHA256 "$BIN/fleetpilot-agent.new" | cut -d' ' -f1)
if [ "$GOT" != "$AGENT_SHA256" ]; then
  rm -f "$BIN/fleetpilot-agent.new"
  echo "fleetpilot install: the downloaded agent binary's SHA-256 is $GOT, the server published $AGENT_SHA256: not installed" >&2
  exit 1
fi
chmod 755 "$BIN/fleetpilot-agent.new"
mv "$BIN/fleetpilot-agent.new" "$BIN/fleetpilot-agent"

# shellcheck disable=SC2086
RESPONSE=$(curl -fsS $CURL_TLS -X POST "$SERVER/api/v1/enroll" -H 'content-type: application/json' \
  -d "{\"enrollment_token\": \"$TOKEN\", \"node_id\": \"$NODE_ID\", \"hostname\": \"$NODE_ID\"}") || {
  echo "fleetpilot install: enrollment refused (token unknown, expired or used up?)" >&2; exit 1; }
CREDENTIAL=$(printf '%s' "$RESPONSE" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$CREDENTIAL" ] || { echo "fleetpilot install: unexpected enrollment answer: $RESPONSE" >&2; exit 1; }

umask 077
{
  echo "# written by the fleetpilot installer"
  echo "server_url = \"$SERVER\""
  [ -n "$CA_FILE" ] && echo "server_ca_file = \"${ROOT%/}/etc/fleetpilot/server-ca.pem\""
  echo "token = \"$CREDENTIAL\""
  echo "agent_id = \"$NODE_ID\""
  echo "spool_dir = \"${ROOT%/}$SPOOL\""
  [ -n "$DEPLOYMENT" ] && echo "deployment = \"$DEPLOYMENT\""
  [ -n "$ENGINE_URLS" ] && echo "engine_urls = [$ENGINE_URLS]"
} > "$ETC/agent.toml.new"
[ -n "$CA_FILE" ] && cp "$CA_FILE" "$ETC/server-ca.pem"
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
