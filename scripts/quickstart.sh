#!/usr/bin/env bash
# Runs kiln end to end on the embedded defaults: builds it, starts `kiln serve` on a fresh data
# directory, submits a training job with the AWS CLI, shows what DescribeTrainingJob reports, and
# stops the server. Nothing to configure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin kiln
KILN=$PWD/target/debug/kiln
DATA=$(mktemp -d /tmp/kiln-quickstart.XXXXXX)
PORT=${PORT:-8080}
while (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done
export KILN_DATA_DIR=$DATA KILN_LISTEN=127.0.0.1:$PORT

"$KILN" serve >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/_kiln/health" >/dev/null && break; sleep 0.1; done
eval "$("$KILN" env)"
echo "kiln is serving on $AWS_ENDPOINT_URL (data in $DATA)"

JOB=quickstart-$(date +%s)
echo "\$ aws sagemaker create-training-job --training-job-name $JOB ..."
aws sagemaker create-training-job --training-job-name "$JOB" \
  --role-arn arn:aws:iam::123456789012:role/SageMakerRole \
  --algorithm-specification TrainingImage=kiln/xgboost,TrainingInputMode=File \
  --hyper-parameters num_round=20,objective=binary:logistic \
  --output-data-config S3OutputPath=s3://quickstart/output \
  --resource-config InstanceType=ml.m5.large,InstanceCount=1,VolumeSizeInGB=10 \
  --stopping-condition MaxRuntimeInSeconds=600
echo "\$ aws sagemaker describe-training-job --training-job-name $JOB"
aws sagemaker describe-training-job --training-job-name "$JOB" \
  --query '{Status: TrainingJobStatus, Secondary: SecondaryStatus, Transitions: SecondaryStatusTransitions}'
echo "\$ kiln jobs list"
"$KILN" jobs list
