#!/usr/bin/env bash
# `make demo`: the emulator plus a real Airflow on SQLite run the example pipeline end to end.
# Everything lives in .scratch/demo; the emulator is stopped on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch="$PWD/.scratch/demo"
rm -rf "$scratch"
mkdir -p "$scratch"
api_key="demo-$(python -c 'import secrets; print(secrets.token_hex(8))')"

python -m airflow_provider_batches.emulator --port 0 --api-key "$api_key" \
    --data-dir "$scratch/emulator" >"$scratch/emulator.log" 2>&1 &
emulator_pid=$!
trap 'kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true' EXIT

base_url=""
for _ in $(seq 100); do
    base_url=$(sed -n 's/^MKA1 emulator listening on \(http[^ ]*\).*/\1/p' "$scratch/emulator.log")
    [ -n "$base_url" ] && break
    kill -0 "$emulator_pid" 2>/dev/null || { cat "$scratch/emulator.log"; exit 1; }
    sleep 0.1
done
[ -n "$base_url" ] || { echo "the emulator did not start:"; cat "$scratch/emulator.log"; exit 1; }
echo "emulator: $base_url"

export AIRFLOW_HOME="$scratch/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export AIRFLOW_CONN_MKA1_DEFAULT="{\"conn_type\": \"mka1\", \"host\": \"$base_url\", \"password\": \"$api_key\"}"

airflow db migrate >"$scratch/db-migrate.log" 2>&1 || { cat "$scratch/db-migrate.log"; exit 1; }
workdir="$scratch/pipeline"
echo "running example_mka1_batch_pipeline with airflow dags test (log: $scratch/dags-test.log)"
if ! airflow dags test example_mka1_batch_pipeline -c "{\"workdir\": \"$workdir\"}" >"$scratch/dags-test.log" 2>&1; then
    tail -n 60 "$scratch/dags-test.log"
    echo "the pipeline failed"
    exit 1
fi
# summary.json is written by the last task, which runs only when every task before it succeeded.
if [ ! -s "$workdir/summary.json" ]; then
    tail -n 60 "$scratch/dags-test.log"
    echo "the pipeline did not produce its summary"
    exit 1
fi
echo
echo "summary ($workdir/summary.json):"
cat "$workdir/summary.json"
echo
echo "results: $workdir/results.jsonl ($(wc -l <"$workdir/results.jsonl") lines); first one:"
head -n 1 "$workdir/results.jsonl"

jobdir="$scratch/job"
echo
echo "running example_mka1_batch_job with airflow dags test (log: $scratch/dags-test-job.log)"
if ! airflow dags test example_mka1_batch_job -c "{\"workdir\": \"$jobdir\"}" >"$scratch/dags-test-job.log" 2>&1; then
    tail -n 60 "$scratch/dags-test-job.log"
    echo "the batch job failed"
    exit 1
fi
[ -s "$jobdir/answers/results.jsonl" ] || { tail -n 60 "$scratch/dags-test-job.log"; echo "no results file"; exit 1; }
echo "manifest ($jobdir/answers/manifest.json):"
cat "$jobdir/answers/manifest.json"
echo "results: $jobdir/answers/results.jsonl ($(wc -l <"$jobdir/answers/results.jsonl") rows, one per question)"
