#!/usr/bin/env bash
# Contract test of the live service against openapi/openapi.yaml with schemathesis
# (pinned, from PyPI): no 5xx, and no response that contradicts the document.
# Runs the debug binary on the memory store with a bootstrap API key holding every
# scope, and a local stand-in for DingTalk's robot endpoint so that the one action that
# works without a Graph/DingTalk connection never leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
if ! python3 -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    python3 -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet --bin dingbridge
BIN="${CARGO_TARGET_DIR:-target}/debug/dingbridge"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# DingTalk robot stand-in: answers {"errcode":0} to every POST.
FAKE_PORT=$(free_port)
python3 - "$FAKE_PORT" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"errcode":0,"errmsg":"ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)

KEY=$("$BIN" keys hash --name schemathesis --scopes triggers,actions,admin 2>"$WORK/entry")
ENTRY=$(grep '^schemathesis:' "$WORK/entry")
PORT=$(free_port)
env -i PATH="$PATH" \
    DINGBRIDGE_LISTEN="127.0.0.1:$PORT" \
    DINGBRIDGE_LOG_LEVEL=warn \
    DINGBRIDGE_API_BOOTSTRAP_KEYS="$ENTRY" \
    DINGBRIDGE_API_MAILBOXES="sales@example.com|Sales" \
    DINGBRIDGE_DINGTALK_OAPI_BASE_URL="http://127.0.0.1:$FAKE_PORT" \
    "$BIN" serve >"$WORK/service.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

set +e
schemathesis run openapi/openapi.yaml \
    --url "http://127.0.0.1:$PORT" \
    -H "Authorization: Bearer $KEY" \
    -H "X-API-Key: $KEY" \
    --generation-with-security-parameters false \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
    --max-time "${SCHEMATHESIS_MAX_TIME:-50}" \
    --phases examples,coverage,fuzzing \
    --generation-database none \
    --seed 1 \
    --request-timeout 10 \
    --workers 1 \
    --no-color
status=$?
set -e
if [ "$status" -ne 0 ]; then
    echo "--- service log ---"
    tail -n 50 "$WORK/service.log"
fi
exit "$status"
