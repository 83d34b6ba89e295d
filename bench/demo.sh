#!/bin/sh
# make demo: a small fake Plik deployment (SQLite + local files), then pmigrate on it.
# Usage: sh bench/demo.sh [FOLDER]   (pmigrate must be on PATH; make demo sees to it)
set -eu
out=${1:-demo/run}
mkdir -p "$out"
out=$(cd "$out" && pwd)

step() { printf '\n== %s\n\n' "$*"; }

step "1/5  A fake Plik deployment: SQLite metadata, blobs in a local folder"
pmigrate fakedb "$out/src" --users 20 --uploads 200 --files 600 --sizes mixed --seed 1
echo
echo "Its plikd.cfg ($out/src/plikd.cfg):"
sed 's/^/    /' "$out/src/plikd.cfg"

step "2/5  Where it goes: a second SQLite database and folder"
cat > "$out/target.cfg" <<CFG
DataBackend = "file"
[DataBackendConfig]
  Directory = "$out/target-files"
[MetadataBackendConfig]
  Driver = "sqlite3"
  ConnectionString = "$out/target.db"
CFG
sed 's/^/    /' "$out/target.cfg"

step "3/5  What pmigrate would copy (--dry-run writes nothing)"
pmigrate --config "$out/src/plikd.cfg" --to "$out/target.cfg" --dry-run

step "4/5  Migrate: every row, then every blob, hashed on the way"
pmigrate --config "$out/src/plikd.cfg" --to "$out/target.cfg" -q

step "5/5  Verify: every row digested, every blob read back and checked against plikd's md5"
pmigrate verify --config "$out/src/plikd.cfg" --to "$out/target.cfg" --checksum md5 -q

printf '\nDemo files are in %s\n' "$out"
