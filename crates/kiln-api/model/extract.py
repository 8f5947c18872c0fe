#!/usr/bin/env python3
"""Extract the input shapes kiln validates from botocore's service models.

The AWS service models are the source of truth for member names, lengths, ranges, patterns and enums.
kiln embeds the subset reachable from the operations it serves (model/*.json), so validation messages
name exactly the constraint the real service enforces. Re-run after upgrading botocore:

    python3 crates/kiln-api/model/extract.py
"""
import gzip, json, os
import botocore

OPS = {
    "sagemaker": ["CreateTrainingJob", "DescribeTrainingJob", "ListTrainingJobs", "StopTrainingJob",
                  "DeleteTrainingJob", "UpdateTrainingJob", "AddTags", "ListTags", "DeleteTags",
                  "CreateHyperParameterTuningJob", "DescribeHyperParameterTuningJob",
                  "ListHyperParameterTuningJobs", "ListTrainingJobsForHyperParameterTuningJob",
                  "StopHyperParameterTuningJob", "DeleteHyperParameterTuningJob", "Search"],
    "logs": ["DescribeLogGroups", "DescribeLogStreams", "GetLogEvents", "FilterLogEvents",
             "CreateLogGroup", "CreateLogStream", "PutLogEvents"],
}
KEEP = ("type", "required", "min", "max", "pattern", "enum")

def main():
    root = os.path.join(os.path.dirname(botocore.__file__), "data")
    here = os.path.dirname(os.path.abspath(__file__))
    for service, ops in OPS.items():
        vdir = sorted(os.listdir(os.path.join(root, service)))[-1]
        with gzip.open(os.path.join(root, service, vdir, "service-2.json.gz")) as f:
            model = json.load(f)
        shapes, out, todo = model["shapes"], {}, []
        operations = {}
        for op in ops:
            o = model["operations"][op]
            operations[op] = o["input"]["shape"] if "input" in o else None
            if "input" in o:
                todo.append(o["input"]["shape"])
        while todo:
            name = todo.pop()
            if name in out:
                continue
            s = shapes[name]
            t = {k: s[k] for k in KEEP if k in s}
            if s["type"] == "structure":
                t["members"] = {m: v["shape"] for m, v in s["members"].items()}
                todo.extend(t["members"].values())
            elif s["type"] == "list":
                t["member"] = s["member"]["shape"]
                todo.append(t["member"])
            elif s["type"] == "map":
                t["key"], t["value"] = s["key"]["shape"], s["value"]["shape"]
                todo += [t["key"], t["value"]]
            out[name] = t
        doc = {"service": service, "apiVersion": model["metadata"]["apiVersion"],
               "botocore": botocore.__version__, "operations": operations,
               "shapes": dict(sorted(out.items()))}
        with open(os.path.join(here, f"{service}.json"), "w") as f:
            json.dump(doc, f, indent=0, sort_keys=False)
            f.write("\n")
        print(service, len(out), "shapes")

if __name__ == "__main__":
    main()
