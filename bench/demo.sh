#!/bin/sh
# make demo: a small fake Plik deployment (SQLite + local files), then pmigrate on it.
# Usage: sh bench/demo.sh [FOLDER]   (pmigrate must be on PATH; make demo sees to it)
set -eu
out=${1:-demo/run}
mkdir -p "$out"
out=$(cd "$out" && pwd)

step() { printf '\n== %s\n\n' "$*"; }

step "1/3  A fake Plik deployment: SQLite metadata, blobs in a local folder"
pmigrate fakedb "$out/src" --users 20 --uploads 200 --files 600 --sizes mixed --seed 1
echo
echo "Its plikd.cfg ($out/src/plikd.cfg):"
sed 's/^/    /' "$out/src/plikd.cfg"

step "2/3  Where it goes: a second SQLite database and folder"
cat > "$out/target.cfg" <<CFG
DataBackend = "file"
[DataBackendConfig]
  Directory = "$out/target-files"
[MetadataBackendConfig]
  Driver = "sqlite3"
  ConnectionString = "$out/target.db"
CFG
sed 's/^/    /' "$out/target.cfg"

step "3/3  What pmigrate would copy (--dry-run writes nothing)"
pmigrate --config "$out/src/plikd.cfg" --to "$out/target.cfg" --dry-run

# Next steps, once they exist: the migration itself, then the audit.
#   step "4/5  Migrate"
#   pmigrate --config "$out/src/plikd.cfg" --to "$out/target.cfg"
#   step "5/5  Verify every row and blob"
#   pmigrate verify --config "$out/src/plikd.cfg" --to "$out/target.cfg"

printf '\nDemo files are in %s\n' "$out"
