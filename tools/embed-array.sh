#!/usr/bin/env bash
# One task of the nightly array job: embeds shard K of N of a catalog and publishes it as
# segment K of the segment set OUT (see README, "Scaling out"). The same script serves
#   Slurm:      sbatch --array=0-3 tools/embed-array.sh   (K = SLURM_ARRAY_TASK_ID,
#                                                          N = SLURM_ARRAY_TASK_COUNT)
#   Kubernetes: an Indexed Job                             (K = JOB_COMPLETION_INDEX,
#                                                          N = SHARDS)
#   anywhere:   SHARD=K SHARDS=N bash tools/embed-array.sh
# Settings come from the environment: TAILOR (binary, default `tailor`), MODEL, CATALOG,
# OUT, and optionally BATCH and EXTRA (more embed flags).
#
# A retried or requeued task resumes from its checkpoint; one started while an earlier
# attempt still runs waits for it (--wait) instead of sharing its work directory.
#SBATCH --job-name=tailor-embed
#SBATCH --requeue
#SBATCH --cpus-per-task=1
#SBATCH --output=tailor-embed-%A_%a.out
#SBATCH --open-mode=append
set -euo pipefail

K=${SLURM_ARRAY_TASK_ID:-${JOB_COMPLETION_INDEX:-${SHARD:-}}}
N=${SLURM_ARRAY_TASK_COUNT:-${SHARDS:-}}
if [ -z "$K" ] || [ -z "$N" ]; then
    echo "embed-array.sh: no shard: run as a Slurm array task or Kubernetes Indexed Job, or set SHARD and SHARDS" >&2
    exit 2
fi
: "${MODEL:?set MODEL to the model file}" "${CATALOG:?set CATALOG}" "${OUT:?set OUT to the segment set}"
TAILOR=${TAILOR:-tailor}

echo "task $K of $N on $(hostname) (pid $$)"
# shellcheck disable=SC2086 # EXTRA is a list of flags
exec "$TAILOR" embed --model "$MODEL" --catalog "$CATALOG" --out "$OUT" \
    --shard "$K/$N" --batch "${BATCH:-32}" --wait ${EXTRA:-}
