#!/usr/bin/env bash
# A real training job end to end on the embedded defaults: builds kiln, starts `kiln serve` on a
# fresh data directory, trains the built-in XGBoost on the Titanic data (../shared/data/titanic)
# with `kiln train --wait`, then shows the job through the AWS CLI and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin kiln
KILN=$PWD/target/debug/kiln
DATA=${KILN_DATA_DIR:-$(mktemp -d /tmp/kiln-quickstart.XXXXXX)}
PORT=${PORT:-8080}
while (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done
export KILN_DATA_DIR=$DATA KILN_LISTEN=127.0.0.1:$PORT

"$KILN" serve >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/_kiln/health" >/dev/null && break; sleep 0.1; done
eval "$("$KILN" env)"
echo "kiln is serving on $AWS_ENDPOINT_URL (data in $DATA)"

TITANIC=../shared/data/titanic
echo "\$ kiln train --image xgboost --train $TITANIC/train.csv --validation $TITANIC/test.csv --hp ... --wait"
"$KILN" train --image xgboost --name titanic-xgboost \
  --train "$TITANIC/train.csv" --validation "$TITANIC/test.csv" \
  --hp objective=binary:logistic --hp num_round=50 --hp max_depth=4 --hp eta=0.2 --hp eval_metric=auc \
  --wait

echo
echo "\$ aws sagemaker describe-training-job --training-job-name titanic-xgboost --query ..."
aws sagemaker describe-training-job --training-job-name titanic-xgboost \
  --query '{Status: TrainingJobStatus, Model: ModelArtifacts.S3ModelArtifacts, Metrics: FinalMetricDataList, Seconds: TrainingTimeInSeconds}'
