#!/usr/bin/env bash
# kcat (librdkafka) against a live `pgbroker serve`.
#
#   kcat.sh BOOTSTRAP PREFIX
#
# Needs PGBROKER_BIN, PGBROKER_DATABASE_URL and PGBROKER_SCHEMA: topics are
# created with the pgbroker CLI, and two scenarios cross between kcat and
# `pgbroker produce` / `pgbroker consume`. KCAT_DEBUG=1 adds
# `-d protocol,broker` to every kcat call (to stderr).
#
# Prints one PASS or FAIL line per scenario; exits 1 if any failed.
set -euo pipefail

BOOTSTRAP=${1:?usage: kcat.sh BOOTSTRAP PREFIX}
PREFIX=${2:?usage: kcat.sh BOOTSTRAP PREFIX}
: "${PGBROKER_BIN:?}" "${PGBROKER_DATABASE_URL:?}" "${PGBROKER_SCHEMA:?}"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DEBUG_ARGS=()
if [[ ${KCAT_DEBUG:-0} == 1 ]]; then DEBUG_ARGS=(-d protocol,broker); fi

die() { echo "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# kcat with the bootstrap address and a hard time limit, so that a hang
# fails in seconds.
k() { timeout "${KCAT_TIMEOUT:-30}" kcat -b "$BOOTSTRAP" "${DEBUG_ARGS[@]}" -X socket.timeout.ms=10000 "$@"; }

pgb() { timeout 60 "$PGBROKER_BIN" --database-url "$PGBROKER_DATABASE_URL" --schema "$PGBROKER_SCHEMA" "$@"; }

# ---------------------------------------------------------------------------

metadata() {
  local topic=${PREFIX}meta
  pgb topic create "$topic" --partitions 3 >/dev/null
  k -L -J >"$WORK/all.json"
  k -L -J -t "$topic" >"$WORK/one.json"
  python3 - "$BOOTSTRAP" "$topic" "$WORK/all.json" "$WORK/one.json" <<'EOF'
import json, sys
bootstrap, topic, all_path, one_path = sys.argv[1:]
for path in (all_path, one_path):
    md = json.load(open(path))
    brokers = {b["id"]: b["name"] for b in md["brokers"]}
    assert brokers, f"no brokers in {md}"
    # kcat names brokers host:port/id
    assert any(n.split("/")[0] == bootstrap for n in brokers.values()), f"no broker at {bootstrap}: {brokers}"
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, f"{topic} not listed in {path.rsplit('/', 1)[1]} ({sorted(topics)[:10]})"
    t = topics[topic]
    assert "error" not in t, f"topic error: {t}"
    parts = sorted(p["partition"] for p in t["partitions"])
    assert parts == [0, 1, 2], f"partitions {parts}"
    assert all(p["leader"] in brokers for p in t["partitions"]), f"leaders {t['partitions']} not in {brokers}"
EOF
}

roundtrip_100k() {
  local topic=${PREFIX}bulk n=100000 keys=64
  pgb topic create "$topic" --partitions 4 >/dev/null
  # Key kN, value "kN <seq of this key> <filler>": one key stays in one
  # partition, so its sequence numbers must come back 0,1,2,... in order.
  awk -v n=$n -v keys=$keys 'BEGIN { for (i = 0; i < n; i++) {
      k = "k" (i % keys); printf "%s:%s %d payload-%d\n", k, k, int(i / keys), i } }' >"$WORK/in.txt"
  KCAT_TIMEOUT=120 k -P -t "$topic" -K: -X linger.ms=20 -X message.timeout.ms=60000 <"$WORK/in.txt" \
    2>"$WORK/produce.err" || die "kcat -P exited $?: $(tail -3 "$WORK/produce.err")"
  grep -q 'Delivery failed\|ERROR' "$WORK/produce.err" && die "kcat -P: $(grep -m3 'Delivery failed\|ERROR' "$WORK/produce.err")"
  KCAT_TIMEOUT=120 k -C -t "$topic" -o beginning -e -q -f '%p %o %k %s\n' >"$WORK/out.txt" \
    || die "kcat -C exited $?"
  awk -v n=$n '
    { part = $1; off = $2; key = $3; vkey = $4; seq = $5
      if (key != vkey) { print "record " part "@" off ": key " key " but value for " vkey; bad = 1; exit }
      if (!(part in next_off)) next_off[part] = 0
      if (off != next_off[part]) { print "partition " part ": offset " off " after " next_off[part] - 1; bad = 1; exit }
      next_off[part] = off + 1
      if ((key in kpart) && kpart[key] != part) { print "key " key " in partitions " kpart[key] " and " part; bad = 1; exit }
      kpart[key] = part
      if (seq != kseq[key] + 0) { print "key " key ": sequence " seq " where " kseq[key] + 0 " was due"; bad = 1; exit }
      kseq[key] = seq + 1
      count++ }
    END { if (bad) exit 1
          if (count != n) { print "read " count " records, produced " n; exit 1 } }' "$WORK/out.txt" >&2
}

headers() {
  local topic=${PREFIX}hdr
  pgb topic create "$topic" --partitions 1 >/dev/null
  printf 'hk:hv\nhk2:hv2\n' | k -P -t "$topic" -K: -H h1=v1 -H h2=v2 -H h1=v3 -H empty=
  k -C -t "$topic" -o beginning -e -q -f '%k|%s|%h\n' >"$WORK/h.txt"
  local want=$'hk|hv|h1=v1,h2=v2,h1=v3,empty=\nhk2|hv2|h1=v1,h2=v2,h1=v3,empty='
  [[ $(cat "$WORK/h.txt") == "$want" ]] || die "read back: $(cat "$WORK/h.txt" | tr '\n' ';'), want: ${want//$'\n'/;}"
}

pgbroker_to_kcat() {
  local topic=${PREFIX}p2k before after
  pgb topic create "$topic" --partitions 2 >/dev/null
  before=$(now_ms)
  printf 'pk:pv\n' | pgb produce "$topic" --key-separator : --header ph=1 --header pq=a=b 2>/dev/null
  after=$(now_ms)
  k -C -t "$topic" -o beginning -e -q -f '%k|%s|%h|%T\n' >"$WORK/p2k.txt"
  IFS='|' read -r key value hdrs ts <"$WORK/p2k.txt" || die "kcat read nothing"
  [[ $(wc -l <"$WORK/p2k.txt") == 1 ]] || die "kcat read $(wc -l <"$WORK/p2k.txt") records, want 1"
  [[ $key == pk && $value == pv ]] || die "key/value '$key'/'$value', want pk/pv"
  [[ $hdrs == 'ph=1,pq=a=b' ]] || die "headers '$hdrs', want 'ph=1,pq=a=b'"
  ((ts >= before - 1000 && ts <= after + 1000)) || die "timestamp $ts outside the produce window [$before, $after]"
}

kcat_to_pgbroker() {
  local topic=${PREFIX}k2p before after kts
  pgb topic create "$topic" --partitions 2 >/dev/null
  before=$(now_ms)
  printf 'kk:kv\n' | k -P -t "$topic" -K: -H kh=kv2 -H kz=
  after=$(now_ms)
  kts=$(k -C -t "$topic" -o beginning -e -q -f '%T\n')
  pgb consume "$topic" --from-beginning --format json --max-messages 1 --idle-timeout 3s >"$WORK/k2p.json"
  python3 - "$WORK/k2p.json" "$before" "$after" "$kts" <<'EOF'
import json, sys
path, before, after, kts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
recs = [json.loads(l) for l in open(path) if l.strip()]
assert len(recs) == 1, f"pgbroker consume printed {len(recs)} records, want 1"
r = recs[0]
assert r["key"] == "kk" and r["value"] == "kv", f"key/value {r['key']!r}/{r['value']!r}"
want = [{"key": "kh", "value": "kv2"}, {"key": "kz", "value": ""}]
assert r["headers"] == want, f"headers {r['headers']}, want {want}"
assert before - 1000 <= r["timestamp"] <= after + 1000, f"timestamp {r['timestamp']} outside [{before}, {after}]"
assert r["timestamp"] == kts, f"pgbroker consume timestamp {r['timestamp']}, kcat reads {kts}"
EOF
}

# ---------------------------------------------------------------------------

echo "# kcat: $(kcat -V 2>&1 | grep -m1 -o 'Version [^ ]*') ($(kcat -V 2>&1 | grep -m1 -o 'librdkafka [^ ]*'))"
failed=0
for scenario in metadata roundtrip_100k headers pgbroker_to_kcat kcat_to_pgbroker; do
  start=$SECONDS
  # A subshell with errexit, outside any `if`, so that every failing command
  # fails the scenario.
  set +e
  (set -e; "$scenario") 2>"$WORK/err"
  rc=$?
  set -e
  if ((rc == 0)); then
    echo "PASS kcat ${scenario//_/-} ($((SECONDS - start))s)"
  else
    failed=1
    reason=$(grep -v '^%7' "$WORK/err" | tail -3 | tr '\n' ' ')
    ((rc == 124)) && reason="kcat timed out. $reason"
    echo "FAIL kcat ${scenario//_/-}: ${reason:-exit $rc}"
    if [[ ${KCAT_DEBUG:-0} == 1 ]]; then cat "$WORK/err" >&2; fi
  fi
done
exit $failed
