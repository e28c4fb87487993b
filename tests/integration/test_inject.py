"""`mtlsd inject` (docs/injection.md): manifests in, injected manifests out, in the format
they came in; other objects pass through value for value; skips and refusals on stderr
with their reasons and the exit codes. The YAML written is read back with Debian's
PyYAML (a second, independent YAML 1.1 reader), through /usr/bin/python3."""

import json
import os
import subprocess
import unittest

from harness import MTLSD, TempDir

DEBIAN_PYTHON = "/usr/bin/python3"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
      annotations:
        example.com/version: "1.0"
    spec:
      initContainers:
      - name: vault-init
        image: vault:1
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 5
        env:
        - {name: FEATURE, value: "on"}
        - {name: MODE, value: "0755"}
        - {name: LIMIT, value: "1e3"}
        - name: SCRIPT
          value: |
            line one
            line two
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - port: 80
    targetPort: "8080"
"""


def inject(text, *args):
    return subprocess.run([MTLSD, "inject", *args], input=text, capture_output=True, text=True,
                          timeout=30)


def yaml_docs(text):
    """The documents of TEXT as PyYAML reads them (YAML 1.1, as kubectl does)."""
    r = subprocess.run([DEBIAN_PYTHON, "-c",
                        "import json, sys, yaml; "
                        "print(json.dumps(list(yaml.safe_load_all(sys.stdin))))"],
                       input=text, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"PyYAML cannot read the output:\n{r.stderr}\n{text}")
    return [d for d in json.loads(r.stdout) if d is not None]


class InjectTest(unittest.TestCase):
    def test_a_deployment_is_injected_and_the_rest_passes_through(self):
        r = inject(DEPLOYMENT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("deployment/web: injected", r.stderr)
        self.assertIn("service/web: passed through", r.stderr)
        original = yaml_docs(DEPLOYMENT)
        deployment, service = yaml_docs(r.stdout)
        self.assertEqual(service, original[1])  # value for value, "8080" still a string
        spec = deployment["spec"]["template"]["spec"]
        self.assertEqual([c["name"] for c in spec["initContainers"]],
                         ["mtlsd-init", "mtlsd", "vault-init"])
        self.assertEqual([v["name"] for v in spec["volumes"]], ["mtlsd-certs"])
        web = spec["containers"][0]
        self.assertEqual(web["readinessProbe"], {
            "httpGet": {"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"},
            "periodSeconds": 5})
        # Strings stay strings through both readers.
        env = {e["name"]: e["value"] for e in web["env"]}
        self.assertEqual(env, {"FEATURE": "on", "MODE": "0755", "LIMIT": "1e3",
                               "SCRIPT": "line one\nline two\n"})
        sidecar = spec["initContainers"][1]
        probes = json.loads(next(e["value"] for e in sidecar["env"]
                                 if e["name"] == "MTLSD_APP_PROBES"))
        self.assertEqual(probes["web/readyz"]["httpGet"]["port"], 8080)  # named port resolved
        # Everything that was there is still there.
        meta = deployment["spec"]["template"]["metadata"]
        self.assertEqual(meta["annotations"]["example.com/version"], "1.0")
        self.assertEqual(deployment["spec"]["replicas"], 2)

    def test_injecting_twice_changes_nothing(self):
        once = inject(DEPLOYMENT)
        twice = inject(once.stdout)
        self.assertEqual(twice.returncode, 0, twice.stderr)
        self.assertIn("skipped: already injected", twice.stderr)
        self.assertEqual(yaml_docs(twice.stdout), yaml_docs(once.stdout))

    def test_json_in_json_out_and_lists(self):
        docs = yaml_docs(DEPLOYMENT)
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        r = inject(text)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["kind"], "List")
        self.assertEqual(out["items"][1], docs[1])
        names = [c["name"] for c in out["items"][0]["spec"]["template"]["spec"]["initContainers"]]
        self.assertEqual(names[:2], ["mtlsd-init", "mtlsd"])
        r = inject(text, "-o", "yaml")
        self.assertEqual(yaml_docs(r.stdout)[0], out)

    def test_a_refused_object_is_written_unchanged_and_exits_1(self):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
               "spec": {"securityContext": {"runAsUser": 1337},
                        "containers": [{"name": "app", "image": "a"}]}}
        r = inject(json.dumps(pod))
        self.assertEqual(r.returncode, 1)
        self.assertIn("pod/root: refused: container app runs with runAsUser 1337", r.stderr)
        self.assertEqual(json.loads(r.stdout), pod)
        pod["spec"] = {"containers": [{"name": "app"}]}
        pod["metadata"]["annotations"] = {"mtlsd.io/inbound-mode": "loose"}
        r = inject(json.dumps(pod))
        self.assertEqual(r.returncode, 1)
        self.assertIn('annotation mtlsd.io/inbound-mode: "loose" is not', r.stderr)

    def test_skips_say_why(self):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "node-agent", "namespace": "kube-system"},
               "spec": {"containers": [{"name": "a"}]}}
        r = inject(json.dumps(pod))
        self.assertEqual(r.returncode, 0)
        self.assertIn("skipped: namespace kube-system is never injected", r.stderr)
        self.assertEqual(json.loads(r.stdout), pod)

    def test_the_injector_configuration(self):
        with TempDir() as tmp:
            path = os.path.join(tmp, "injector.json")
            with open(path, "w") as f:
                json.dump({"image": "registry.example/mtlsd:0.1.0",
                           "image_pull_policy": "Always", "native_sidecar": False,
                           "resources": {"limits": {"cpu": "1", "memory": "128Mi"}},
                           "exclude_outbound_cidrs": ["10.96.0.1/32"],
                           "exclude_inbound_ports": [22, 9100]}, f)
            r = inject(DEPLOYMENT, "--config", path)
            self.assertEqual(r.returncode, 0, r.stderr)
            spec = yaml_docs(r.stdout)[0]["spec"]["template"]["spec"]
            sidecar = spec["containers"][0]  # not native: first of the containers
            self.assertEqual((sidecar["name"], sidecar["image"], sidecar["imagePullPolicy"]),
                             ("mtlsd", "registry.example/mtlsd:0.1.0", "Always"))
            self.assertEqual(sidecar["resources"]["limits"], {"cpu": "1", "memory": "128Mi"})
            init = next(c for c in spec["initContainers"] if c["name"] == "mtlsd-init")
            args = " ".join(init["args"])
            self.assertIn("--exclude-outbound-cidrs 10.96.0.1/32", args)
            self.assertIn("--exclude-inbound-ports 22,9100", args)
            # A pod's annotation still wins over the injector's default.
            pod = yaml_docs(DEPLOYMENT)[0]
            pod["spec"]["template"]["metadata"]["annotations"][
                "mtlsd.io/exclude-inbound-ports"] = "2222"
            r = inject(json.dumps(pod), "--config", path)
            init = next(c for c in json.loads(r.stdout)["spec"]["template"]["spec"][
                "initContainers"] if c["name"] == "mtlsd-init")
            self.assertIn("--exclude-inbound-ports 2222", " ".join(init["args"]))
            # Strict: a typo, a bad value, a wrong type, each named with its path.
            for bad, message in (({"imag": "x"}, 'imag: unknown key (did you mean "image"?)'),
                                 ({"resources": {"limits": {"cpu": "lots"}}},
                                  'resources.limits.cpu: "lots": not a resource quantity'),
                                 ({"exclude_inbound_ports": ["22"]},
                                  "exclude_inbound_ports[0]: expected a port number"),
                                 ({"image_pull_policy": "Sometimes"},
                                  'image_pull_policy: "Sometimes": invalid pull policy')):
                with open(path, "w") as f:
                    json.dump(bad, f)
                r = inject(DEPLOYMENT, "--config", path)
                self.assertEqual(r.returncode, 2)
                self.assertTrue(r.stderr.startswith(f"{path}: {message}"), r.stderr)

    def test_the_api_server_is_excluded_where_the_pod_runs(self):
        # What inject writes does not depend on where it runs (a laptop, another
        # cluster's CI): the init container excludes the API server it sees itself.
        def init_args(env, *args, pod=DEPLOYMENT):
            r = subprocess.run([MTLSD, "inject", "-o", "json", *args], input=pod,
                               capture_output=True, text=True, timeout=30,
                               env={**os.environ, **env})
            self.assertEqual(r.returncode, 0, r.stderr)
            first = json.loads(r.stdout)["items"][0]  # the Deployment, first of a List
            spec = first["spec"]["template"]["spec"]
            init = next(c for c in spec["initContainers"] if c["name"] == "mtlsd-init")
            return init["args"]

        self.assertEqual(init_args({}), init_args({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}))
        self.assertNotIn("--no-exclude-api-server", init_args({}))
        with TempDir() as tmp:
            path = os.path.join(tmp, "injector.json")
            with open(path, "w") as f:
                json.dump({"exclude_api_server": False}, f)
            self.assertIn("--no-exclude-api-server", init_args({}, "--config", path))

        # The init container's own environment decides, --print and --apply alike.
        def printed(env, *args):
            r = subprocess.run([MTLSD, "iptables", "--print", *args], capture_output=True,
                               text=True, timeout=30, env={**os.environ, **env})
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout, r.stderr

        rule = "-A MTLSD_OUTPUT -d {} -m comment --comment \"mtlsd: excluded outbound CIDR\""
        out, err = printed({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
        self.assertIn(rule.format("10.96.0.1/32"), out)
        self.assertIn("excluding the API server, 10.96.0.1/32 (KUBERNETES_SERVICE_HOST)", err)
        out, _ = printed({"KUBERNETES_SERVICE_HOST": "fd00:10:96::1"}, "--ipv6")
        ipv6 = out.split("# IPv6")[1]
        self.assertIn(rule.format("fd00:10:96::1/128"), ipv6)
        # Whatever else the pod excludes, the API server is excluded too.
        out, _ = printed({"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
                         "--exclude-outbound-cidrs", "192.0.2.0/24")
        self.assertIn(rule.format("192.0.2.0/24"), out)
        self.assertIn(rule.format("10.96.0.1/32"), out)
        # Not an address, not set, or turned off: not excluded, and said so.
        out, err = printed({"KUBERNETES_SERVICE_HOST": "kubernetes.default"})
        self.assertNotIn("excluded outbound CIDR", out)
        self.assertIn('KUBERNETES_SERVICE_HOST "kubernetes.default" is not an IP address', err)
        out, err = printed({})
        self.assertIn("KUBERNETES_SERVICE_HOST is not set", err)
        out, _ = printed({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "--no-exclude-api-server")
        self.assertNotIn("10.96.0.1", out)

    def test_the_sidecar_base_and_ipv6_off(self):
        def injected(config):
            with TempDir() as tmp:
                path = os.path.join(tmp, "injector.json")
                with open(path, "w") as f:
                    json.dump(config, f)
                r = subprocess.run([MTLSD, "inject", "-o", "json", "--config", path],
                                   input=DEPLOYMENT, capture_output=True, text=True, timeout=30)
                return r, path

        r, _ = injected({"ipv6": False, "sidecar": {
            "tls": {"min_version": "1.3"}, "limits": {"max_connections": 2048},
            "admin": {"lifecycle": False}, "certs": {"poll_interval": "10s"}, "workers": 1}})
        self.assertEqual(r.returncode, 0, r.stderr)
        spec = json.loads(r.stdout)["items"][0]["spec"]["template"]["spec"]
        sidecar = next(c for c in spec["initContainers"] if c["name"] == "mtlsd")
        env = {e["name"]: e.get("value") for e in sidecar["env"]}
        config = json.loads(env["MTLSD_CONFIG"])
        self.assertEqual(config["tls"], {"min_version": "1.3"})
        self.assertEqual(config["limits"], {"max_connections": 2048})
        self.assertEqual(config["admin"], {"lifecycle": False, "listen": "127.0.0.1:15000"})
        self.assertEqual(config["certs"], {"poll_interval": "10s",
                                           "dir": "/var/run/mtlsd/certs"})
        self.assertEqual(config["workers"], 1)
        self.assertEqual([l["listen"] for l in config["listeners"]],
                         ["127.0.0.1:15001", "0.0.0.0:15006"])
        init = next(c for c in spec["initContainers"] if c["name"] == "mtlsd-init")
        self.assertNotIn("--ipv6", init["args"])
        # The sidecar accepts what the injector wrote (2 would be a configuration error;
        # 1 says that this machine has no certificates in the pod's directory).
        check = subprocess.run([MTLSD, "check"], env={**os.environ, "MTLSD_CONFIG":
                                                      env["MTLSD_CONFIG"]},
                               capture_output=True, text=True, timeout=30)
        self.assertIn(check.returncode, (0, 1), check.stderr)
        self.assertNotIn("MTLSD_CONFIG:", check.stderr)
        # The base is checked as the sidecar will check it; what the injection decides
        # itself is not the operator's to set.
        for bad, message in (({"sidecar": {"tls": {"min_version": "1.1"}}},
                              ': sidecar: tls.min_version: "1.1"'),
                             ({"sidecar": {"listeners": []}}, "sidecar.listeners: unknown key"),
                             ({"sidecar": {"admin": {"listen": "0.0.0.0:1"}}},
                              "sidecar.admin.listen: unknown key"),
                             ({"sidecar": {"certs": {"dir": "/x"}}},
                              "sidecar.certs.dir: unknown key"),
                             ({"ipv6": "no"}, "ipv6: expected a boolean")):
            with self.subTest(bad=bad):
                r, path = injected(bad)
                self.assertEqual(r.returncode, 2)
                self.assertIn(message, r.stderr)
                self.assertTrue(r.stderr.startswith(path), r.stderr)

    def test_bad_input_is_2_with_the_place(self):
        r = inject("kind: Pod\nmetadata: {name: [x\n")
        self.assertEqual(r.returncode, 2)
        self.assertIn("mtlsd inject: stdin: line", r.stderr)
        r = inject("- just\n- a list\n")
        self.assertEqual(r.returncode, 2)
        self.assertIn("document 1 is not a Kubernetes object", r.stderr)
        r = inject("{\"kind\": ")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not valid JSON", r.stderr)
        with TempDir() as tmp:
            path = os.path.join(tmp, "absent.yaml")
            r = subprocess.run([MTLSD, "inject", "-f", path], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertIn(f"{path}: cannot read", r.stderr)
        r = inject("", "-o", "xml")
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main()
