"""The Helm chart (helm/mtlsd, docs/injection.md), offline: `helm lint --strict`, and `helm
template` with the defaults and with other values, every rendering checked object by
object — the built-in kinds by k8s_schema.mjs against the models of @kubernetes/client-
node (every field must exist), the CRD kinds (cert-manager, Prometheus Operator) against
the fields of their CRDs that crd_fields.py lists — plus the webhook's safety settings,
the PodDisruptionBudget rule, the restricted Pod Security profile, values.schema.json
refusing bad values, the rendered injector configuration run by a real `mtlsd webhook`
with the certificate Helm generated, and the metric names of the dashboard and the alerts
checked against a live /metrics. tests/run.sh installs Helm (from npm) and the models."""

import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import unittest

from crd_fields import CRD_FIELDS, check_crd
from harness import MTLSD, Mtlsd, Pki, TempDir, free_port, http_get, listening_ports, wait_until
from test_inject import yaml_docs

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(TOP, "helm", "mtlsd")
HELM = os.path.join(TOP, "build", "npm", "bin", "helm")
MODELS = os.path.join(TOP, "build", "npm", "node_modules", "@kubernetes", "client-node",
                      "dist", "gen", "models")
CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s_schema.mjs")
DEBIAN_PYTHON = "/usr/bin/python3"
NAMESPACE = "mtlsd-system"

VALUES = os.path.join(TOP, "tests", "helm")

# The renderings every test of the chart's objects looks at: the defaults and the values
# files of tests/helm.
VALUE_SETS = {
    "defaults": [],
    "one replica": ["-f", os.path.join(VALUES, "one-replica.yaml")],
    "helm certificates": ["-f", os.path.join(VALUES, "helm-certs.yaml")],
    "monitoring and the mesh CA": ["-f", os.path.join(VALUES, "monitoring.yaml")],
    "custom image and injector": ["-f", os.path.join(VALUES, "custom.yaml")],
    "network policy": ["-f", os.path.join(VALUES, "network-policy.yaml")],
}


def helm(*args, check=True):
    if not os.access(HELM, os.X_OK):
        raise AssertionError(f"{HELM} is missing: tests/run.sh unpacks it from npm")
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120,
                          check=check)


def render(*values):
    r = helm("template", "mtlsd", CHART, "--namespace", NAMESPACE, *values, check=False)
    if r.returncode != 0:
        raise AssertionError(f"helm template {values} failed:\n{r.stderr}")
    return yaml_docs(r.stdout)


def one(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and
             (name is None or o["metadata"]["name"] == name)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


class HelmChartTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.renderings = {name: render(*values) for name, values in VALUE_SETS.items()}

    def test_lint_strict(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                r = helm("lint", "--strict", CHART, *values, check=False)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("0 chart(s) failed", r.stdout)

    def test_every_object_is_valid_kubernetes(self):
        for name, objects in self.renderings.items():
            with self.subTest(values=name):
                builtin = [o for o in objects if (o["apiVersion"], o["kind"]) not in CRD_FIELDS]
                crds = [o for o in objects if (o["apiVersion"], o["kind"]) in CRD_FIELDS]
                r = subprocess.run(["node", CHECKER, MODELS], input=json.dumps(builtin),
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                problems = [p for o in crds for p in check_crd(o)]
                self.assertEqual(problems, [])
                # Every namespaced object goes where the release goes (or, for the mesh
                # CA's certificate, where cert-manager keeps ClusterIssuers' Secrets).
                for o in objects:
                    ns = o["metadata"].get("namespace")
                    if o["kind"] in ("MutatingWebhookConfiguration", "ClusterIssuer"):
                        self.assertIsNone(ns, o["kind"])
                    elif o["metadata"]["name"] != "mtlsd-mesh-ca":
                        self.assertEqual(ns, NAMESPACE, f"{o['kind']}/{o['metadata']['name']}")

    def test_every_rendered_injector_configuration_is_accepted(self):
        pod = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                          "spec": {"containers": [{"name": "app", "image": "busybox"}]}})
        for name, objects in self.renderings.items():
            with self.subTest(values=name), TempDir() as tmp:
                path = os.path.join(tmp, "injector.json")
                with open(path, "w") as f:
                    f.write(one(objects, "ConfigMap", "mtlsd-webhook")["data"]["injector.json"])
                r = subprocess.run([MTLSD, "inject", "--config", path], input=pod,
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("pod/p: injected", r.stderr)

    def test_the_webhook_configuration_is_exactly_the_spec(self):
        for name in ("defaults", "helm certificates"):
            with self.subTest(values=name):
                objects = self.renderings[name]
                config = one(objects, "MutatingWebhookConfiguration")
                self.assertEqual(config["apiVersion"], "admissionregistration.k8s.io/v1")
                [hook] = config["webhooks"]
                self.assertEqual(hook["admissionReviewVersions"], ["v1"])
                self.assertEqual(hook["rules"], [{
                    "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                    "resources": ["pods"], "scope": "Namespaced"}])
                self.assertEqual(hook["namespaceSelector"], {"matchExpressions": [
                    {"key": "mtlsd.io/inject", "operator": "In", "values": ["enabled"]},
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                     "values": ["kube-system", NAMESPACE]}]})
                self.assertEqual(hook["objectSelector"], {"matchExpressions": [
                    {"key": "mtlsd.io/inject", "operator": "NotIn", "values": ["disabled"]}]})
                self.assertEqual((hook["failurePolicy"], hook["sideEffects"],
                                  hook["timeoutSeconds"], hook["reinvocationPolicy"]),
                                 ("Fail", "None", 5, "IfNeeded"))
                service = hook["clientConfig"]["service"]
                self.assertEqual(service, {"name": "mtlsd-webhook", "namespace": NAMESPACE,
                                           "path": "/inject", "port": 443})
                svc = one(objects, "Service", "mtlsd-webhook")
                self.assertEqual(svc["spec"]["ports"][0]["port"], 443)
                annotations = config["metadata"].get("annotations", {})
                if name == "defaults":
                    self.assertEqual(annotations["cert-manager.io/inject-ca-from"],
                                     f"{NAMESPACE}/mtlsd-webhook")
                    self.assertNotIn("caBundle", hook["clientConfig"])
                    cert = one(objects, "Certificate", "mtlsd-webhook")
                    self.assertEqual(cert["spec"]["secretName"], "mtlsd-webhook-certs")
                    self.assertIn(f"mtlsd-webhook.{NAMESPACE}.svc", cert["spec"]["dnsNames"])
                else:
                    self.assertNotIn("cert-manager.io/inject-ca-from", annotations)
                    secret = one(objects, "Secret", "mtlsd-webhook-certs")
                    self.assertEqual(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"])
                    self.assertFalse([o for o in objects if o["kind"] == "Certificate"])

    def test_disruption_budget_only_with_more_than_one_replica(self):
        pdb = one(self.renderings["defaults"], "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        self.assertEqual(one(self.renderings["defaults"], "Deployment")["spec"]["replicas"], 2)
        self.assertFalse([o for o in self.renderings["one replica"]
                          if o["kind"] == "PodDisruptionBudget"])
        spec = one(self.renderings["one replica"], "Deployment")["spec"]["template"]["spec"]
        self.assertNotIn("topologySpreadConstraints", spec)

    def test_the_network_policy_admits_the_api_server_and_prometheus_only(self):
        self.assertFalse([o for o in self.renderings["defaults"] if o["kind"] == "NetworkPolicy"])
        policy = one(self.renderings["network policy"], "NetworkPolicy")
        deployment = one(self.renderings["network policy"], "Deployment")
        self.assertEqual(policy["spec"]["podSelector"]["matchLabels"],
                         deployment["spec"]["selector"]["matchLabels"])
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress"])
        api, metrics = policy["spec"]["ingress"]
        self.assertEqual([f["ipBlock"]["cidr"] for f in api["from"]],
                         ["10.0.0.10/32", "fd00:10::1/128"])
        self.assertEqual(api["ports"], [{"port": "https", "protocol": "TCP"}])
        peer = metrics["from"][0]
        self.assertEqual(peer["podSelector"]["matchLabels"],
                         {"app.kubernetes.io/name": "prometheus"})
        self.assertEqual(peer["namespaceSelector"]["matchLabels"],
                         {"kubernetes.io/metadata.name": "monitoring"})

    def test_the_injector_runs_under_the_restricted_profile(self):
        deployment = one(self.renderings["defaults"], "Deployment")
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        self.assertEqual(pod["metadata"]["labels"]["mtlsd.io/inject"], "disabled")
        self.assertEqual(spec["priorityClassName"], "system-cluster-critical")
        self.assertIs(spec["automountServiceAccountToken"], False)
        self.assertEqual(spec["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertIs(spec["securityContext"]["runAsNonRoot"], True)
        self.assertEqual(spec["topologySpreadConstraints"][0]["topologyKey"],
                         "kubernetes.io/hostname")
        [c] = spec["containers"]
        sc = c["securityContext"]
        self.assertEqual((sc["allowPrivilegeEscalation"], sc["readOnlyRootFilesystem"],
                          sc["runAsNonRoot"], sc["capabilities"]),
                         (False, True, True, {"drop": ["ALL"]}))
        self.assertEqual(c["args"][:2], ["webhook", "--listen"])
        self.assertEqual(c["readinessProbe"]["httpGet"],
                         {"path": "/ready", "port": "https", "scheme": "HTTPS"})
        self.assertIn("requests", c["resources"])
        custom = one(self.renderings["custom image and injector"], "Deployment")
        self.assertEqual(custom["spec"]["template"]["spec"]["containers"][0]["image"],
                         "registry.example.com/mesh/mtlsd:0.1.0-rc1")

    def test_values_schema_refuses_bad_values(self):
        cases = [
            (["--set", "webhook.certs.mode=vault"], "webhook.certs.mode"),
            (["--set", "webhook.replicas=0"], "webhook.replicas"),
            (["--set", "webhook.replicaz=2"], "replicaz"),
            (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
            (["--set", "injector.nativeSidecar=maybe"], "injector.nativeSidecar"),
            (["--set-json", "injector.excludeInboundPorts=[70000]"], "excludeInboundPorts"),
            (["--set-json", 'injector.excludeOutboundCIDRs=["10.0.0.0"]'],
             "excludeOutboundCIDRs"),
            (["--set-json", 'injector.sidecar={"listeners":[]}'], "listeners"),
            (["--set", "webhook.listen=localhost"], "webhook.listen"),
            (["--set", "monitoring.prometheusRule.handshakeFailureRatio=2"],
             "handshakeFailureRatio"),
            (["--set-json", 'webhook.networkPolicy.apiServerCIDRs=["api.example"]'],
             "apiServerCIDRs"),
            # On without the API server's addresses, it would refuse every pod creation.
            (["--set", "webhook.networkPolicy.enabled=true"],
             "webhook.networkPolicy.enabled needs webhook.networkPolicy.apiServerCIDRs"),
        ]
        for values, words in cases:
            with self.subTest(values=values):
                r = helm("template", "mtlsd", CHART, *values, check=False)
                self.assertNotEqual(r.returncode, 0, r.stdout[:300])
                self.assertIn(words, r.stderr)

    def test_notes_say_what_to_do_next(self):
        # `helm install --dry-run` needs a cluster; NOTES.txt is rendered instead through
        # tpl in a copy of the chart, with the same values and helpers.
        with TempDir() as tmp:
            chart = os.path.join(tmp, "mtlsd")
            shutil.copytree(CHART, chart)
            os.rename(os.path.join(chart, "templates", "NOTES.txt"),
                      os.path.join(chart, "notes.txt"))
            with open(os.path.join(chart, "templates", "notes-check.yaml"), "w") as f:
                f.write('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
                        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n')
            notes = {}
            for mode in ("helm", "cert-manager"):
                r = helm("template", "mtlsd", chart, "--namespace", NAMESPACE,
                         "--show-only", "templates/notes-check.yaml",
                         "--set", f"webhook.certs.mode={mode}", check=False)
                self.assertEqual(r.returncode, 0, r.stderr)
                notes[mode] = yaml_docs(r.stdout)[0]["data"]["notes"]
        for text in notes.values():
            self.assertIn("kubectl label namespace NAMESPACE mtlsd.io/inject=enabled", text)
            self.assertIn("docs/kubernetes.md", text)
        self.assertIn("valid for\n730 days", notes["helm"])
        self.assertIn("mtlsd_cert_expiry_timestamp_seconds", notes["helm"])
        self.assertIn("renewed 720h before it expires", notes["cert-manager"])


class HelmWebhookTest(unittest.TestCase):
    """What the chart renders, run for real: the injector configuration of the ConfigMap
    and the certificate Helm generated, served by `mtlsd webhook`, verified against the
    webhook configuration's caBundle for the Service's name, and its patch giving a pod
    that the schema check accepts."""

    def test_the_rendered_injector_serves_with_the_generated_certificate(self):
        objects = render("--set", "webhook.certs.mode=helm",
                         "--set-json", 'injector.excludeOutboundPorts=[5432]',
                         "--set-json", 'injector.sidecar={"limits":{"max_connections":1000}}')
        secret = one(objects, "Secret", "mtlsd-webhook-certs")
        config = one(objects, "ConfigMap", "mtlsd-webhook")["data"]["injector.json"]
        ca_bundle = one(objects, "MutatingWebhookConfiguration")["webhooks"][0][
            "clientConfig"]["caBundle"]
        with TempDir() as tmp:
            certs = os.path.join(tmp, "certs")
            os.mkdir(certs)
            for key in ("tls.crt", "tls.key"):
                with open(os.path.join(certs, key), "wb") as f:
                    f.write(base64.b64decode(secret["data"][key]))
            ca_file = os.path.join(tmp, "ca.crt")
            with open(ca_file, "wb") as f:
                f.write(base64.b64decode(ca_bundle))
            port = free_port()
            wh = Mtlsd(tmp, json.loads(config), name="webhook", log_format="text",
                       command=("webhook", "--listen", f"127.0.0.1:{port}", "--certs", certs))
            try:
                wait_until(lambda: port in listening_ports(wh.pid), timeout=15,
                           what="the webhook listening")
                ctx = ssl.create_default_context(cafile=ca_file)
                server_name = f"mtlsd-webhook.{NAMESPACE}.svc"
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"generateName": "web-", "namespace": "shop"},
                       "spec": {"containers": [{"name": "web", "image": "nginx",
                                                "ports": [{"containerPort": 8080}]}]}}
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                conn = http.client.HTTPSConnection(server_name, port, timeout=10, context=ctx)
                conn.sock = ctx.wrap_socket(raw, server_hostname=server_name)
                conn.request("POST", "/inject", body=json.dumps({
                    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {"uid": "u-1", "operation": "CREATE", "namespace": "shop",
                                "object": pod}}))
                response = json.loads(conn.getresponse().read())["response"]
                conn.close()
            finally:
                wh.stop(timeout=20)
        patch = json.loads(base64.b64decode(response["patch"]))
        code = ("import json, sys, jsonpatch\n"
                "d = json.load(sys.stdin)\n"
                "print(json.dumps(jsonpatch.apply_patch(d['pod'], d['patch'])))\n")
        r = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True,
                           input=json.dumps({"pod": pod, "patch": patch}), timeout=30,
                           check=True)
        injected = json.loads(r.stdout)
        init = next(c for c in injected["spec"]["initContainers"] if c["name"] == "mtlsd-init")
        self.assertIn("--exclude-outbound-ports", init["args"])
        self.assertIn("5432", init["args"])
        sidecar = next(c for c in injected["spec"]["initContainers"] if c["name"] == "mtlsd")
        env = {e["name"]: e.get("value") for e in sidecar["env"]}
        self.assertEqual(json.loads(env["MTLSD_CONFIG"])["limits"], {"max_connections": 1000})
        self.assertEqual(sidecar["image"], "mtlsd:0.1.0")
        check = subprocess.run(["node", CHECKER, MODELS], input=json.dumps([injected]),
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


# Names in PromQL that are not metrics: functions, keywords, label names of by/without.
PROMQL_WORDS = {"sum", "rate", "increase", "by", "histogram_quantile", "min", "max", "time",
                "and", "or", "unless", "without", "le", "namespace", "pod", "listener", "side",
                "reason", "result", "root", "container", "kind", "humanizePercentage"}


def metric_names(expr):
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'\{[^}]*\}', "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr)) - PROMQL_WORDS
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names if not n.startswith("__")}


class HelmMetricsTest(unittest.TestCase):
    def test_dashboard_and_alerts_read_only_metrics_that_exist(self):
        objects = render("--set", "monitoring.prometheusRule.enabled=true",
                         "--set", "monitoring.dashboard.enabled=true")
        dashboard = json.loads(one(objects, "ConfigMap", "mtlsd-dashboard")["data"]["mtlsd.json"])
        used = {}
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for n in metric_names(target["expr"]):
                    used.setdefault(n, f"dashboard panel {panel['title']!r}")
        rules = one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
        for rule in rules:
            for n in metric_names(rule["expr"]):
                used.setdefault(n, f"alert {rule['alert']}")
        self.assertGreater(len(used), 15)
        exported = self.live_metric_names()
        missing = {n: where for n, where in used.items() if n not in exported}
        self.assertEqual(missing, {}, "names that no mtlsd exports")

    def live_metric_names(self):
        """Every metric name that a running sidecar and a running webhook export."""
        names = set()
        with TempDir() as tmp:
            pki = Pki(tmp)
            certs = pki.issue("sidecar", spiffe_id="spiffe://cluster.local/ns/shop/sa/web")
            webhook_certs = pki.issue("webhook", dns=[f"mtlsd-webhook.{NAMESPACE}.svc"])
            admin, health, listen = free_port(), free_port(), free_port()
            sidecar = Mtlsd(tmp, {
                "admin": {"listen": f"127.0.0.1:{admin}"},
                "health": {"listen": f"127.0.0.1:{health}"},
                "certs": {"dir": certs},
                "listeners": [{"name": "inbound", "mode": "inbound",
                               "listen": f"127.0.0.1:{listen}", "forward": "127.0.0.1:9",
                               "permissive": True}]}, name="sidecar")
            port = free_port()
            wh = Mtlsd(tmp, {}, name="webhook", log_format="text",
                       command=("webhook", "--listen", f"127.0.0.1:{port}", "--certs",
                                webhook_certs))
            try:
                sidecar.wait_listening(admin=True)
                wait_until(lambda: port in listening_ports(wh.pid), timeout=15,
                           what="the webhook listening")
                texts = [http_get(f"http://127.0.0.1:{health}/metrics")[2].decode()]
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                                   context=ssl._create_unverified_context())
                conn.request("GET", "/metrics")
                texts.append(conn.getresponse().read().decode())
                conn.close()
            finally:
                sidecar.stop()
                wh.stop(timeout=20)
        for text in texts:
            names |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        return names


if __name__ == "__main__":
    unittest.main()
