#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL cluster.
#   scripts/with-postgres.sh CMD [ARGS...]
# Exports SWITCHBOARD_TEST_DATABASE_URL, runs CMD, then stops the cluster and
# removes its directory. Exits with CMD's exit code.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

# Locate PostgreSQL server binaries (Debian: /usr/lib/postgresql/<ver>/bin).
bindir="${PG_BINDIR:-}"
if [ -z "$bindir" ]; then
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then bindir="$d"; break; fi
  done
fi
if [ -z "$bindir" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
  bindir="$(dirname "$(command -v initdb)")"
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
  echo "with-postgres: PostgreSQL server binaries (initdb, pg_ctl) not found." >&2
  echo "with-postgres: install the 'postgresql' package (scripts/install-deps.sh test) or set PG_BINDIR." >&2
  exit 1
fi
psql_bin="$bindir/psql"
[ -x "$psql_bin" ] || psql_bin="$(command -v psql || true)"
if [ -z "$psql_bin" ]; then
  echo "with-postgres: psql not found; install the 'postgresql-client' package." >&2
  exit 1
fi

# initdb/pg_ctl refuse to run as root: run them as the postgres user then.
if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "with-postgres: running as root but no 'postgres' user exists; install the 'postgresql' package." >&2
    exit 1
  fi
  tmp="$(mktemp -d /tmp/switchboard-pg.XXXXXX)"
  chown postgres: "$tmp"
  as_pg() { (cd "$tmp" && runuser -u postgres -- "$@"); }
else
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-pg.XXXXXX")"
  as_pg() { (cd "$tmp" && "$@"); }
fi
datadir="$tmp/data"
started=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$started" -eq 1 ]; then
    as_pg "$bindir/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null 2>&1 \
      || as_pg "$bindir/pg_ctl" -D "$datadir" -m immediate -w stop >/dev/null 2>&1 \
      || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
  else
    # Fallback: random high port that nobody answers on.
    local p
    while :; do
      p=$(( 20000 + RANDOM % 40000 ))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
  fi
}

as_pg "$bindir/initdb" -D "$datadir" -A trust -U postgres --no-sync -E UTF8 --locale=C >"$tmp/initdb.log" 2>&1 || {
  echo "with-postgres: initdb failed:" >&2; cat "$tmp/initdb.log" >&2; exit 1; }

# Retry with a fresh port in case another process grabbed it in the meantime.
port=""
for attempt in 1 2 3; do
  port="$(free_port)"
  if as_pg "$bindir/pg_ctl" -D "$datadir" -l "$tmp/log" -w -t 60 \
      -o "-p $port -k $tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null; then
    started=1
    break
  fi
  # pg_ctl may have left a half-started server behind.
  as_pg "$bindir/pg_ctl" -D "$datadir" -m immediate -w stop >/dev/null 2>&1 || true
done
if [ "$started" -ne 1 ]; then
  echo "with-postgres: failed to start PostgreSQL; server log:" >&2
  tail -n 50 "$tmp/log" >&2 || true
  exit 1
fi

"$psql_bin" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres >/dev/null <<'SQL'
CREATE ROLE switchboard LOGIN PASSWORD 'switchboard' CREATEDB;
CREATE DATABASE switchboard OWNER switchboard;
SQL

export SWITCHBOARD_TEST_DATABASE_URL="postgresql://switchboard:switchboard@127.0.0.1:$port/switchboard"
echo "with-postgres: PostgreSQL $("$bindir/pg_ctl" --version | awk '{print $3}') running at 127.0.0.1:$port (data: $datadir)"

set +e
"$@"
rc=$?
set -e
exit "$rc"
