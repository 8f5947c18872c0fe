#!/usr/bin/env bash
# Throughput of the embedded S3 endpoint against a plain file copy on the same disk, in one run:
#   reference: `cp` + `sync` of a 1 GiB file;
#   PUT:       the same file through `kiln serve` (multipart, 16 MiB parts, 8 in flight), fsync'd by
#              the server before it answers;
#   GET:       it back to a file (16 MiB ranges, 8 in flight), fsync'd like the reference.
# Rounds are interleaved (ROUNDS, default 3) and the best of each is reported: on a shared VM the
# first touch of memory and other tenants' work make single runs noisy.
# The client is kiln-blob's bench_s3 example (Rust, object_store), so the figures measure the server
# rather than a Python client; client and server share this machine's cores. Each round runs it twice:
# with signed payloads (kiln-blob's default: both ends SHA-256 every byte) and with UNSIGNED-PAYLOAD.
# Where `rclone` is installed (Debian: `apt-get install rclone`), each round also runs it, a client
# nobody here wrote: PUT multipart (16 MiB parts, 8 in flight; signed payloads, as its SDK signs
# over plain HTTP, and it sends each part's Content-MD5; `--s3-disable-checksum` so that it does not
# read the whole file once more first to store its MD5, `--ignore-times` so that it uploads again),
# GET with 8 streams, then `sync` of the file like the reference. RCLONE=0 skips it.
# Where the AWS CLI is installed, each round also runs `aws s3 cp` up and down (then `sync`) with its
# multipart settings raised to the same 16 MiB parts and 8 requests in flight (its defaults are 8 MiB
# and 10); over plain HTTP botocore signs every payload. AWSCLI=0 skips it.
#   SIZE_MB=1024 ROUNDS=3 BENCH_DIR=/path/on/the/disk/to/test scripts/bench-s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18282}
cargo build -q --release --bin kiln -p kiln --example bench_s3 -p kiln-blob
TARGET=${CARGO_TARGET_DIR:-target}
DIR=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/kiln-bench-s3.XXXXXX")
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT

now() { date +%s.%N; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
rate() { awk -v mb="$1" -v s="$2" 'BEGIN { printf "%.0f", mb / s }'; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $(df -h "$DIR" | awk 'NR==2 {print $1}') holds the file, its copies and the store"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$DIR/src.bin"
MB=$(awk -v n="$SIZE_MB" 'BEGIN { print n * 1.048576 }')
sync

"$TARGET/release/kiln" serve --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/_kiln/health" >/dev/null && break; sleep 0.1; done
KEY=$(awk -F'"' '/access_key_id/{print $2; exit}' "$DIR/data/keys.toml")
SECRET=$(awk -F'"' '/secret_access_key/{print $2; exit}' "$DIR/data/keys.toml")
AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET" \
  AWS_DEFAULT_REGION=us-east-1 aws s3 mb s3://bench >/dev/null

run_client() {  # run_client <download-to> [unsigned] → "put_seconds get_seconds"
  local out
  out=$("$TARGET/release/examples/bench_s3" "http://127.0.0.1:$PORT" "$KEY" "$SECRET" bench "$DIR/src.bin" "$1" ${2:-})
  cmp -s "$DIR/src.bin" "$1" || { echo "the downloaded copy differs from the original" >&2; exit 1; }
  rm -f "$1"
  echo "$(sed -n 's/.*put_seconds=\([0-9.]*\).*/\1/p' <<<"$out") $(sed -n 's/.*get_seconds=\([0-9.]*\).*/\1/p' <<<"$out")"
}

RCLONE=${RCLONE:-1}
command -v rclone >/dev/null || RCLONE=0
# run_tool <name> <up-function> <down-function> <download-to> → "put_seconds get_seconds": a
# client nobody here wrote uploads the file and downloads it again (then sync), checked byte for byte.
run_tool() {
  local name=$1 up=$2 down=$3 to=$4 t0 t1 t2
  t0=$(now)
  "$up" "$DIR/src.bin"
  t1=$(now)
  "$down" "$to"
  sync "$to"
  t2=$(now)
  cmp -s "$DIR/src.bin" "$to" || { echo "$name's downloaded copy differs from the original" >&2; exit 1; }
  rm -f "$to"
  awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { print b - a, c - b }'
}
rclone_up() {
  rclone_cmd copyto "$1" kiln:bench/rclone.bin --s3-upload-cutoff 16M --s3-chunk-size 16M \
    --s3-upload-concurrency 8 --s3-disable-checksum --ignore-times
}
rclone_down() { rclone_cmd copyto kiln:bench/rclone.bin "$1" --multi-thread-cutoff 16M --multi-thread-streams 8; }
rclone_cmd() {
  RCLONE_CONFIG="$DIR/rclone.conf" RCLONE_CONFIG_KILN_TYPE=s3 RCLONE_CONFIG_KILN_PROVIDER=Other \
    RCLONE_CONFIG_KILN_ENDPOINT="http://127.0.0.1:$PORT" RCLONE_CONFIG_KILN_ACCESS_KEY_ID="$KEY" \
    RCLONE_CONFIG_KILN_SECRET_ACCESS_KEY="$SECRET" RCLONE_CONFIG_KILN_REGION=us-east-1 \
    RCLONE_CONFIG_KILN_FORCE_PATH_STYLE=true AWS_CA_BUNDLE= rclone -q --s3-no-check-bucket "$@"
}

AWSCLI=${AWSCLI:-1}
command -v aws >/dev/null || AWSCLI=0
printf '%s\n' "[default]" "region = us-east-1" "s3 =" "  multipart_threshold = 16MB" \
  "  multipart_chunksize = 16MB" "  max_concurrent_requests = 8" >"$DIR/aws.conf"
awscli_up() { awscli_cmd cp "$1" s3://bench/awscli.bin; }
awscli_down() { awscli_cmd cp s3://bench/awscli.bin "$1"; }
awscli_cmd() {
  AWS_CONFIG_FILE="$DIR/aws.conf" AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_ACCESS_KEY_ID="$KEY" \
    AWS_SECRET_ACCESS_KEY="$SECRET" aws --endpoint-url "http://127.0.0.1:$PORT" s3 "$@" --only-show-errors
}

# A warm-up round, not counted: the first use of memory on a VM is slow, whoever touches it.
cp "$DIR/src.bin" "$DIR/copy.bin" && sync && rm -f "$DIR/copy.bin"
run_client "$DIR/back.bin" >/dev/null
if [ "$RCLONE" = 1 ]; then run_tool rclone rclone_up rclone_down "$DIR/rback.bin" >/dev/null; fi
if [ "$AWSCLI" = 1 ]; then run_tool "the AWS CLI" awscli_up awscli_down "$DIR/aback.bin" >/dev/null; fi

COPY_S= PUT_S= GET_S= UPUT_S= UGET_S= RPUT_S= RGET_S= APUT_S= AGET_S=
for round in $(seq "$ROUNDS"); do
  t0=$(now)
  cp "$DIR/src.bin" "$DIR/copy.bin"
  sync
  t1=$(now)
  c=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  rm -f "$DIR/copy.bin"
  read -r p g <<<"$(run_client "$DIR/back.bin")"
  read -r up ug <<<"$(run_client "$DIR/back.bin" unsigned)"
  rclone_rates=
  if [ "$RCLONE" = 1 ]; then
    read -r rp rg <<<"$(run_tool rclone rclone_up rclone_down "$DIR/rback.bin")"
    RPUT_S=$(min "$RPUT_S" "$rp") RGET_S=$(min "$RGET_S" "$rg")
    rclone_rates="; rclone PUT $(rate "$MB" "$rp"), GET $(rate "$MB" "$rg") MB/s"
  fi
  awscli_rates=
  if [ "$AWSCLI" = 1 ]; then
    read -r ap ag <<<"$(run_tool "the AWS CLI" awscli_up awscli_down "$DIR/aback.bin")"
    APUT_S=$(min "$APUT_S" "$ap") AGET_S=$(min "$AGET_S" "$ag")
    awscli_rates="; aws s3 cp PUT $(rate "$MB" "$ap"), GET $(rate "$MB" "$ag") MB/s"
  fi
  echo "round $round: cp+sync $(rate "$MB" "$c") MB/s; signed PUT $(rate "$MB" "$p"), GET $(rate "$MB" "$g"); unsigned PUT $(rate "$MB" "$up"), GET $(rate "$MB" "$ug") MB/s$rclone_rates$awscli_rates; load $(cut -d' ' -f1 /proc/loadavg)"
  COPY_S=$(min "$COPY_S" "$c") PUT_S=$(min "$PUT_S" "$p") GET_S=$(min "$GET_S" "$g")
  UPUT_S=$(min "$UPUT_S" "$up") UGET_S=$(min "$UGET_S" "$ug")
done

COPY=$(rate "$MB" "$COPY_S")
line() { printf '  %-46s %6s MB/s   %.2fx of cp\n' "$1" "$2" "$(awk -v a="$2" -v b="$COPY" 'BEGIN { print a / b }')"; }
echo "best of $ROUNDS, $SIZE_MB MiB:"
printf '  %-46s %6s MB/s\n' "cp + sync (reference)" "$COPY"
line "S3 PUT, signed payload (multipart)" "$(rate "$MB" "$PUT_S")"
line "S3 GET, signed (parallel ranges, to disk)" "$(rate "$MB" "$GET_S")"
line "S3 PUT, UNSIGNED-PAYLOAD (multipart)" "$(rate "$MB" "$UPUT_S")"
line "S3 GET, UNSIGNED-PAYLOAD (parallel ranges)" "$(rate "$MB" "$UGET_S")"
if [ "$RCLONE" = 1 ]; then
  line "rclone PUT, signed payload (multipart)" "$(rate "$MB" "$RPUT_S")"
  line "rclone GET (8 streams, then sync)" "$(rate "$MB" "$RGET_S")"
fi
if [ "$AWSCLI" = 1 ]; then
  line "aws s3 cp PUT, signed payload (16 MiB parts)" "$(rate "$MB" "$APUT_S")"
  line "aws s3 cp GET (8 requests, then sync)" "$(rate "$MB" "$AGET_S")"
fi
