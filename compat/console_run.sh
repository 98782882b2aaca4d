#!/usr/bin/env bash
# The console against `pgbroker serve` on a real PostgreSQL:
#   1. the browser scenario (console/console.mjs): Debian's chromium driven
#      headless by playwright-core, with kcat producing and consuming and
#      the queue CLI making a dead letter;
#   2. schemathesis against the admin API's OpenAPI document, logged in,
#      with a few examples per operation: no answer may be a server error.
#
# Environment:
#   PGBROKER_BIN                the binary to test (default: cargo build)
#   PGBROKER_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
#   COMPAT_LOG_DIR              where logs go (default compat/logs/console-<time>)
#   SCREENSHOTS                 a folder: save a picture of each page there
#   SCHEMATHESIS_EXAMPLES       examples per operation (default 25)
#
# Needs playwright-core in compat/console, chromium, kcat and
# compat/.venv-schemathesis (scripts/setup.sh installs them); fails without
# them. Prints PASS/FAIL lines; exits 1 if any check failed.
set -euo pipefail

COMPAT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$COMPAT")
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
LOGS=${COMPAT_LOG_DIR:-$COMPAT/logs/console-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGS"

[[ -f $COMPAT/console/node_modules/playwright-core/package.json ]] ||
  { echo "console_run.sh: playwright-core is not installed: run scripts/setup.sh" >&2; exit 1; }
[[ -x $COMPAT/.venv-schemathesis/bin/schemathesis ]] ||
  { echo "console_run.sh: schemathesis is not installed: run scripts/setup.sh" >&2; exit 1; }
command -v chromium >/dev/null || { echo "console_run.sh: chromium is not installed: run scripts/setup.sh" >&2; exit 1; }

# shellcheck source=compat/sqs_lib.sh
source "$COMPAT/sqs_lib.sh"

KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
SCHEMA=console_$(date +%s)_$$_$RANDOM
USER_NAME=console-admin
PASSWORD=console-password-1
trap sqs_cleanup EXIT

pgb migrate >/dev/null
echo "$PASSWORD" | pgb user add "$USER_NAME" --password-stdin >/dev/null
for right in produce consume admin; do
  pgb acl add --user "$USER_NAME" --allow "$right" --topic-prefix '' >/dev/null
  pgb acl add --user "$USER_NAME" --allow "$right" --queue-prefix '' >/dev/null
done
pgb acl add --user "$USER_NAME" --allow group --group-prefix '' >/dev/null

"$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" --log "${PGBROKER_LOG:-info}" serve \
  --kafka-listen "127.0.0.1:$KAFKA_PORT" --http-listen "127.0.0.1:$HTTP_PORT" >"$LOGS/server.log" 2>&1 &
PIDS+=($!)
wait_port "$HTTP_PORT" server
wait_port "$KAFKA_PORT" server
URL=http://127.0.0.1:$HTTP_PORT

echo "console compat: chromium $(chromium --version 2>/dev/null | awk '{print $2}'), playwright-core" \
  "$(cd "$COMPAT/console" && node -p 'require("playwright-core/package.json").version'), pgbroker at $URL (schema $SCHEMA), logs in $LOGS"
status=0
(cd "$COMPAT/console" && CONSOLE_URL=$URL KAFKA=127.0.0.1:$KAFKA_PORT PGBROKER_BIN=$PGBROKER_BIN DB=$DB SCHEMA=$SCHEMA \
  CONSOLE_USER=$USER_NAME CONSOLE_PASSWORD=$PASSWORD node console.mjs 2>"$LOGS/browser.log") || status=1

# The admin API under schemathesis, as the logged-in user. Requests may
# take a while: creating a topic of up to 1,000 partitions (the API's
# limit) takes more than 10 s on a busy 2-core machine, which is slow but
# not a server error, the one thing checked here.
login=$(curl -sS -D "$LOGS/login.headers" -H 'Content-Type: application/json' \
  -d "{\"user\": \"$USER_NAME\", \"password\": \"$PASSWORD\"}" "$URL/api/login")
token=$(sed -n 's/^set-cookie: pgbroker_console=\([^;]*\);.*/\1/ip' "$LOGS/login.headers" | tr -d '\r')
csrf=$(json_field "$login" csrf)
set +e
"$COMPAT/.venv-schemathesis/bin/schemathesis" run "$URL/api/openapi.json" --url "$URL" \
  -H "Cookie: pgbroker_console=$token" -H "X-CSRF-Token: $csrf" \
  --checks not_a_server_error --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --request-timeout 60 \
  --exclude-path /api/logout --no-color >"$LOGS/schemathesis.log" 2>&1
st=$?
set -e
tail -n 25 "$LOGS/schemathesis.log"
if ((st == 0)); then
  echo "PASS schemathesis: no server error on any operation of the admin API"
else
  echo "FAIL schemathesis exited $st; see $LOGS/schemathesis.log"
  status=1
fi
if grep -q ' ERROR \| panicked' "$LOGS/server.log"; then
  echo "FAIL server logged errors:"; grep ' ERROR \| panicked' "$LOGS/server.log" | head -5
  status=1
fi
exit "$status"
