"""The fields of the custom resources the chart renders (cert-manager's and the
Prometheus Operator's), as their CRDs' OpenAPI schemas declare them, for a strict check
of what the chart writes where the Kubernetes models of @kubernetes/client-node do not
reach. Each spec is written down from the CRDs (cert-manager 1.16, Prometheus Operator
0.78) for the parts the chart uses, with their siblings, so that a typo or a field at the
wrong level fails; a part marked ANY is not looked into.

A schema is: a type name ("string", "integer", "boolean", "number"), ANY, a dict of
field names to schemas (an object with only those fields), a one-element list (an array
of that schema), or MAP (an object of strings)."""

ANY = object()
MAP = "map"

OBJECT_META = {"name": "string", "namespace": "string", "labels": MAP, "annotations": MAP,
               "generateName": "string", "finalizers": ["string"], "ownerReferences": ANY}

SECRET_KEY_SELECTOR = {"name": "string", "key": "string", "optional": "boolean"}
SAFE_TLS_CONFIG = {
    "ca": {"secret": SECRET_KEY_SELECTOR, "configMap": SECRET_KEY_SELECTOR},
    "cert": {"secret": SECRET_KEY_SELECTOR, "configMap": SECRET_KEY_SELECTOR},
    "keySecret": SECRET_KEY_SELECTOR, "serverName": "string", "insecureSkipVerify": "boolean",
    "caFile": "string", "certFile": "string", "keyFile": "string", "minVersion": "string",
    "maxVersion": "string",
}
ENDPOINT_COMMON = {
    "port": "string", "targetPort": ANY, "path": "string", "scheme": "string",
    "params": ANY, "interval": "string", "scrapeTimeout": "string", "tlsConfig": SAFE_TLS_CONFIG,
    "bearerTokenSecret": SECRET_KEY_SELECTOR, "authorization": ANY, "basicAuth": ANY,
    "oauth2": ANY, "honorLabels": "boolean", "honorTimestamps": "boolean",
    "trackTimestampsStaleness": "boolean", "metricRelabelings": ANY, "relabelings": ANY,
    "proxyUrl": "string", "followRedirects": "boolean", "enableHttp2": "boolean",
    "filterRunning": "boolean",
}
LABEL_SELECTOR = {"matchLabels": MAP, "matchExpressions": ANY}
NAMESPACE_SELECTOR = {"any": "boolean", "matchNames": ["string"]}
ISSUER_REF = {"name": "string", "kind": "string", "group": "string"}
ISSUER_SPEC = {
    "selfSigned": {"crlDistributionPoints": ["string"]},
    "ca": {"secretName": "string", "crlDistributionPoints": ["string"],
           "ocspServers": ["string"], "issuingCertificateURLs": ["string"]},
    "acme": ANY, "vault": ANY, "venafi": ANY,
}

CRD_FIELDS = {
    ("cert-manager.io/v1", "Issuer"): ISSUER_SPEC,
    ("cert-manager.io/v1", "ClusterIssuer"): ISSUER_SPEC,
    ("cert-manager.io/v1", "Certificate"): {
        "secretName": "string", "commonName": "string", "dnsNames": ["string"],
        "uris": ["string"], "ipAddresses": ["string"], "emailAddresses": ["string"],
        "duration": "string", "renewBefore": "string", "renewBeforePercentage": "integer",
        "isCA": "boolean", "usages": ["string"], "subject": ANY, "literalSubject": "string",
        "privateKey": {"algorithm": "string", "size": "integer", "encoding": "string",
                       "rotationPolicy": "string"},
        "issuerRef": ISSUER_REF, "secretTemplate": {"labels": MAP, "annotations": MAP},
        "keystores": ANY, "revisionHistoryLimit": "integer", "additionalOutputFormats": ANY,
        "nameConstraints": ANY, "otherNames": ANY, "encodeUsagesInRequest": "boolean",
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "endpoints": [ENDPOINT_COMMON], "selector": LABEL_SELECTOR,
        "namespaceSelector": NAMESPACE_SELECTOR, "jobLabel": "string",
        "targetLabels": ["string"], "podTargetLabels": ["string"], "sampleLimit": "integer",
        "targetLimit": "integer", "labelLimit": "integer", "attachMetadata": ANY,
        "scrapeProtocols": ["string"], "scrapeClass": "string",
    },
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "podMetricsEndpoints": [{**ENDPOINT_COMMON, "portNumber": "integer"}],
        "selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR,
        "jobLabel": "string", "podTargetLabels": ["string"], "sampleLimit": "integer",
        "targetLimit": "integer", "labelLimit": "integer", "attachMetadata": ANY,
        "scrapeProtocols": ["string"], "scrapeClass": "string",
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "groups": [{"name": "string", "interval": "string", "limit": "integer",
                    "partial_response_strategy": "string", "query_offset": "string",
                    "labels": MAP,
                    "rules": [{"alert": "string", "record": "string", "expr": "string",
                               "for": "string", "keep_firing_for": "string", "labels": MAP,
                               "annotations": MAP}]}],
    },
}

TYPES = {"string": str, "integer": int, "boolean": bool, "number": (int, float)}


def _check(value, schema, where, problems):
    if schema is ANY:
        return
    if schema == MAP:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            problems.append(f"{where}: expected a map of strings")
        return
    if isinstance(schema, str):
        ok = isinstance(value, TYPES[schema]) and not (schema != "boolean" and
                                                       isinstance(value, bool))
        if not ok:
            problems.append(f"{where}: expected {schema}, got {value!r}")
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            problems.append(f"{where}: expected an array")
            return
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]", problems)
        return
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object")
        return
    for key, item in value.items():
        if key not in schema:
            problems.append(f"{where}.{key}: no such field")
        else:
            _check(item, schema[key], f"{where}.{key}", problems)


def check_crd(obj):
    """The problems of one custom resource: unknown fields, wrong types."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    problems = []
    for key in obj:
        if key not in ("apiVersion", "kind", "metadata", "spec"):
            problems.append(f"{where}.{key}: no such field")
    _check(obj.get("metadata"), OBJECT_META, f"{where}.metadata", problems)
    _check(obj.get("spec"), CRD_FIELDS[(obj["apiVersion"], obj["kind"])], f"{where}.spec",
           problems)
    return problems
