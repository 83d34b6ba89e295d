#!/bin/sh
# make demo: a small fake Plik deployment (SQLite + local files), migrated and verified.
set -eu
out=${1:-demo/run}
mkdir -p "$out"
pmigrate fakedb "$out/src" --users 20 --uploads 200 --files 600 --seed 1 -q
cat > "$out/target.cfg" <<CFG
DataBackend = "file"
[DataBackendConfig]
  Directory = "$(cd "$out" && pwd)/target-files"
[MetadataBackendConfig]
  Driver = "sqlite3"
  ConnectionString = "$(cd "$out" && pwd)/target.db"
CFG
pmigrate --config "$out/src/plikd.cfg" --to "$out/target.cfg" --dry-run
