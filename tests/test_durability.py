"""What the server acknowledged survives SIGKILL."""
from kilntest import Kiln, job_request


def test_jobs_and_tags_survive_sigkill(fresh_kiln):
    sm = fresh_kiln.client()
    arns = {}
    for i in range(40):
        arns[f"keep-{i}"] = sm.create_training_job(**job_request(
            f"keep-{i}", Tags=[{"Key": "i", "Value": str(i)}]))["TrainingJobArn"]
    sm.add_tags(ResourceArn=arns["keep-7"], Tags=[{"Key": "late", "Value": "yes"}])
    sm.stop_training_job(TrainingJobName="keep-3")
    before = {n: sm.describe_training_job(TrainingJobName=n) for n in arns}
    fresh_kiln.kill()  # SIGKILL right after the last acknowledged write

    again = Kiln(data_dir=fresh_kiln.data_dir).start()
    try:
        sm2 = again.client(key=fresh_kiln.key)
        for name, arn in arns.items():
            d = sm2.describe_training_job(TrainingJobName=name)
            assert d["TrainingJobArn"] == arn
            assert d["TrainingJobStatus"] == before[name]["TrainingJobStatus"]
            assert d["SecondaryStatusTransitions"] == before[name]["SecondaryStatusTransitions"]
            tags = {t["Key"]: t["Value"] for t in sm2.list_tags(ResourceArn=arn)["Tags"]}
            assert tags["i"] == name.split("-")[1]
        assert {t["Key"] for t in sm2.list_tags(ResourceArn=arns["keep-7"])["Tags"]} == {"i", "late"}
        assert sm2.describe_training_job(TrainingJobName="keep-3")["TrainingJobStatus"] == "Stopped"
        listed = [j["TrainingJobName"] for p in sm2.get_paginator("list_training_jobs").paginate() for j in p["TrainingJobSummaries"]]
        assert sorted(listed) == sorted(arns)
        # The same key still works: keys live in the data directory.
        assert again.key == fresh_kiln.key
    finally:
        again.kill()
