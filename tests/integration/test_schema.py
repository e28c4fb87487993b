"""A strict schema check of everything `mtlsd inject` writes (issue: no unknown fields):
the objects are checked by k8s_schema.mjs against the generated models of the npm package
@kubernetes/client-node, which list every field of every core type; a typo or a field at
the wrong level fails. tests/run.sh installs the package under build/npm."""

import json
import os
import shutil
import subprocess
import unittest

import glob

from test_inject import DEPLOYMENT, inject, yaml_docs

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(TOP, "build", "npm", "node_modules", "@kubernetes", "client-node",
                      "dist", "gen", "models")
CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s_schema.mjs")

# Every kind, both sidecar modes, both certificate sources, every annotation, every
# probe kind (and the ones left alone).
MANIFESTS = [DEPLOYMENT, """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: data}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations:
        mtlsd.io/native-sidecar: "false"
        mtlsd.io/cert-secret: db-certs
        mtlsd.io/allow: spiffe://cluster.local/ns/shop/*,db.example.com
        mtlsd.io/inbound-mode: permissive
        mtlsd.io/exclude-inbound-ports: "22"
        mtlsd.io/exclude-outbound-ports: "5432"
        mtlsd.io/inbound-ports: "5432,8080"
        mtlsd.io/exclude-outbound-cidrs: 169.254.169.254/32
        mtlsd.io/include-outbound-cidrs: 10.0.0.0/8,fd00::/8
        mtlsd.io/proxy-cpu-request: 100m
        mtlsd.io/proxy-memory-request: 64Mi
        mtlsd.io/proxy-cpu-limit: "1"
        mtlsd.io/proxy-memory-limit: 512Mi
        mtlsd.io/rewrite-probes: "true"
        mtlsd.io/log-level: debug
    spec:
      containers:
      - name: db
        image: postgres:16
        ports: [{name: pg, containerPort: 5432}]
        livenessProbe: {tcpSocket: {port: pg}, initialDelaySeconds: 10}
        readinessProbe: {exec: {command: [pg_isready]}}
        startupProbe: {grpc: {port: 9090, service: db}, failureThreshold: 30}
""", """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: report
            image: report:1
            livenessProbe: {httpGet: {host: example.com, path: /, port: 80}}
""", """\
apiVersion: v1
kind: Pod
metadata: {name: single}
spec:
  containers:
  - {name: app, image: app:1}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: job, image: job:1}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: agent:1}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: rs, image: rs:1}]
"""]


def json_stream(text):
    decoder = json.JSONDecoder()
    objects, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return objects
        obj, i = decoder.raw_decode(text, i)
        objects.append(obj)


def schema_problems(objects):
    r = subprocess.run(["node", CHECKER, MODELS], input=json.dumps(objects),
                       capture_output=True, text=True, timeout=120)
    if r.returncode not in (0, 1):
        raise AssertionError(f"the schema checker failed: {r.stderr}")
    return r.stdout.splitlines()


class SchemaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("node") is None or not os.path.isdir(MODELS):
            raise AssertionError(
                f"needs node and @kubernetes/client-node's models in {MODELS} "
                "(tests/run.sh installs them with npm)")
        cls.injected = []
        for text in MANIFESTS:
            r = inject(text, "-o", "json")
            assert r.returncode == 0, r.stderr
            for o in json_stream(r.stdout):  # several documents come out as one List
                cls.injected += o["items"] if o.get("kind") == "List" else [o]

    def test_everything_injected_is_valid_kubernetes(self):
        self.assertEqual(len(self.injected), 8)
        kinds = {o["kind"] for o in self.injected}
        self.assertEqual(kinds, {"Deployment", "Service", "StatefulSet", "CronJob", "Pod", "Job",
                                 "DaemonSet", "ReplicaSet"})
        self.assertEqual(schema_problems(self.injected), [])

    def test_the_golden_outputs_add_no_invalid_field(self):
        """Injection adds no problem: whatever the output has that is not in the API (one
        golden input keeps a field from a future release) was in the input already."""
        def objects_of(pattern):
            objects = []
            for path in sorted(glob.glob(os.path.join(TOP, "tests", "golden", "inject",
                                                      pattern))):
                with open(path.split(".in.")[0].rsplit(".out", 1)[0] + ".code") as f:
                    if f.read().strip() == "2":
                        continue  # bad input, which mtlsd refuses (and so would the API)
                with open(path) as f:
                    text = f.read()
                docs = json_stream(text) if text.lstrip().startswith("{") else yaml_docs(text)
                for doc in docs:
                    objects += doc["items"] if doc.get("kind", "").endswith("List") else [doc]
            return objects

        outputs = objects_of("*.out")
        self.assertGreater(len(outputs), 15)
        before = set(schema_problems(objects_of("*.in.*")))
        self.assertEqual([p for p in schema_problems(outputs) if p not in before], [])

    def test_the_check_catches_a_wrong_field(self):
        """The check can fail: a typo and a field one level off are both reported."""
        bad = json.loads(json.dumps(self.injected[0]))
        spec = bad["spec"]["template"]["spec"]
        spec["initContainers"][1]["restartPolicyy"] = "Always"
        spec["containers"][0]["httpGet"] = {"port": 80}
        problems = schema_problems([bad])
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("restartPolicyy: no such field in V1Container", problems[0] + problems[1])
        self.assertIn("containers[0].httpGet: no such field in V1Container",
                      problems[0] + problems[1])


if __name__ == "__main__":
    unittest.main()
