#!/usr/bin/env bash
# Make sure redis-server is installed (fault tests start their own) and that a
# Redis answers at $STACKSHIFT_TEST_REDIS_URL; start one when none does.
set -euo pipefail
python="${1:-python3}"
url="${STACKSHIFT_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi

ping() { "$python" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()" "$url" >/dev/null 2>&1; }
if ping; then exit 0; fi

port=$("$python" -c "import urllib.parse,sys; print(urllib.parse.urlparse(sys.argv[1]).port or 6379)" "$url")
dir="${TMPDIR:-/tmp}/stackshift-redis-$port"
mkdir -p "$dir"
echo "no Redis at $url: starting redis-server on port $port (data in $dir, no persistence)"
redis-server --daemonize yes --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log"
for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
echo "redis-server did not answer; see $dir/redis.log" >&2
exit 1
