#!/usr/bin/env bash
# The SQS scenario for the AWS SDK for JavaScript v3 (@aws-sdk/client-sqs)
# against `pgbroker serve --sqs-listen` on a real PostgreSQL, signing with an
# access key of a pgbroker user.
#
# Environment:
#   PGBROKER_BIN                the binary to test (default: cargo build)
#   PGBROKER_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
#   COMPAT_LOG_DIR              where logs go (default compat/logs/sqs-node-<time>)
#
# Needs the newest @aws-sdk/client-sqs in compat/sqs-node (scripts/setup.sh
# installs it) and fails without it. Exits 1 if any check failed.
set -euo pipefail

COMPAT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$COMPAT")
NODE_DIR=$COMPAT/sqs-node
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
LOGS=${COMPAT_LOG_DIR:-$COMPAT/logs/sqs-node-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGS"

[[ -f $NODE_DIR/node_modules/@aws-sdk/client-sqs/package.json ]] ||
  { echo "sqs_node_run.sh: @aws-sdk/client-sqs is not installed: run scripts/setup.sh" >&2; exit 1; }
(cd "$NODE_DIR" && node -e 'require("@aws-sdk/client-sqs")')
SDK_VERSION=$(cd "$NODE_DIR" && node -p 'require("@aws-sdk/client-sqs/package.json").version')

# shellcheck source=compat/sqs_lib.sh
source "$COMPAT/sqs_lib.sh"
sqs_start sqs-node-compat

echo "sqs node compat: @aws-sdk/client-sqs $SDK_VERSION, node $(node --version)," \
  "pgbroker on 127.0.0.1:$SQS_PORT (schema $SCHEMA), logs in $LOGS"
cd "$NODE_DIR"
sqs_run_client node sqs_sdk.mjs "http://127.0.0.1:$SQS_PORT"
