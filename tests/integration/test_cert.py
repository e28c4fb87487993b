"""Integration tests for "mtlsd cert ca" and "mtlsd cert issue" (the README, Command line).

They run the real binary (MTLSD_BIN) in temporary directories and check what it wrote
with an independent implementation, the openssl command line: chains verify, SANs, key
usages and validity windows are what was asked for, keys are PKCS#8, 0600 and match
their certificates, and bad command lines exit 2 with the usage.
"""

import datetime
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

MTLSD = os.environ.get("MTLSD_BIN")
OPENSSL = shutil.which("openssl")

TD = "cluster.local"
WEB = "spiffe://cluster.local/ns/default/sa/web"


def setUpModule():
    if not MTLSD or not os.access(MTLSD, os.X_OK):
        raise RuntimeError("MTLSD_BIN must name the mtlsd binary (ctest sets it)")
    if not OPENSSL:
        raise unittest.SkipTest("the openssl command line is needed to check certificates")


def mtlsd(*args, umask=None):
    """Runs "mtlsd cert ARGS..." and returns the CompletedProcess (never raises)."""
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([MTLSD, "cert", *args], capture_output=True, text=True,
                          timeout=60, preexec_fn=preexec)


def openssl(*args, check=True):
    proc = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def cert_text(path):
    return openssl("x509", "-in", path, "-noout", "-text").stdout


def cert_dates(path):
    """Returns (notBefore, notAfter) of the first certificate in |path| as UTC datetimes."""
    out = openssl("x509", "-in", path, "-noout", "-startdate", "-enddate").stdout
    values = dict(line.split("=", 1) for line in out.strip().splitlines())

    def parse(text):
        when = datetime.datetime.strptime(text.strip(), "%b %d %H:%M:%S %Y GMT")
        return when.replace(tzinfo=datetime.timezone.utc)

    return parse(values["notBefore"]), parse(values["notAfter"])


def read_text(path):
    with open(path, encoding="ascii") as f:
        return f.read()


def pem_certs(path):
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n",
                      read_text(path), re.S)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


class CertTestCase(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="mtlsd-cert-")
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def run_ok(self, *args, **kwargs):
        proc = mtlsd(*args, **kwargs)
        self.assertEqual(proc.returncode, 0,
                         f"mtlsd cert {' '.join(args)}\nstdout: {proc.stdout}\n"
                         f"stderr: {proc.stderr}")
        self.assertNotIn("PRIVATE KEY", proc.stdout + proc.stderr)
        return proc

    def make_ca(self, name="ca", *extra):
        self.run_ok("ca", "--out", self.path(name), "--trust-domain", TD, *extra)
        return self.path(name)

    def assertVerifies(self, directory):
        crt = os.path.join(directory, "tls.crt")
        proc = openssl("verify", "-CAfile", os.path.join(directory, "ca.crt"),
                       "-untrusted", crt, crt, check=False)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        return proc

    def assertKeyMatches(self, key_path, cert_path):
        with open(key_path, encoding="ascii") as f:
            self.assertEqual(f.readline(), "-----BEGIN PRIVATE KEY-----\n", "PKCS#8 PEM")
        key_pub = openssl("pkey", "-in", key_path, "-pubout").stdout
        cert_pub = openssl("x509", "-in", cert_path, "-noout", "-pubkey").stdout
        self.assertEqual(key_pub, cert_pub)

    def assertAbout(self, got, want, slack=datetime.timedelta(minutes=5)):
        self.assertLess(abs(got - want), slack, f"{got} is not about {want}")


class CaTest(CertTestCase):
    def test_ca_files_and_extensions(self):
        ca = self.make_ca()
        self.assertEqual(sorted(os.listdir(ca)), ["ca.crt", "ca.key"])
        self.assertEqual(mode(os.path.join(ca, "ca.key")), 0o600)
        self.assertKeyMatches(os.path.join(ca, "ca.key"), os.path.join(ca, "ca.crt"))

        text = cert_text(os.path.join(ca, "ca.crt"))
        self.assertRegex(text, r"Basic Constraints: critical\s+CA:TRUE")
        self.assertRegex(text, r"Key Usage: critical\s+Certificate Sign, CRL Sign\n")
        self.assertIn("Subject Key Identifier", text)
        self.assertIn("URI:spiffe://cluster.local", text)
        self.assertRegex(text, r"Subject: O ?= ?mtlsd, CN ?= ?cluster.local root CA")
        self.assertIn("ecdsa-with-SHA256", text)
        self.assertIn("prime256v1", text)

        # A root verifies against itself.
        ca_crt = os.path.join(ca, "ca.crt")
        openssl("verify", "-CAfile", ca_crt, ca_crt)

    def test_ca_default_validity_is_ten_years(self):
        ca = self.make_ca()
        not_before, not_after = cert_dates(os.path.join(ca, "ca.crt"))
        self.assertAbout(not_before, now())
        self.assertAbout(not_after, now() + datetime.timedelta(days=3650))
        self.assertLessEqual(not_before, now(), "backdated a little, never in the future")

    def test_ca_days_name_and_key_type(self):
        ca = self.path("ca")
        self.run_ok("ca", "--out", ca, "--days", "30", "--name", "Test Root",
                    "--key-type", "ecdsa-p384")
        text = cert_text(os.path.join(ca, "ca.crt"))
        self.assertRegex(text, r"CN ?= ?Test Root")
        self.assertIn("secp384r1", text)
        self.assertIn("ecdsa-with-SHA384", text)
        self.assertNotIn("URI:", text, "no trust domain, no URI SAN")
        _, not_after = cert_dates(os.path.join(ca, "ca.crt"))
        self.assertAbout(not_after, now() + datetime.timedelta(days=30))

    def test_nested_out_dir_is_created(self):
        out = self.path("a", "b", "c")
        self.run_ok("ca", "--out", out)
        self.assertTrue(os.path.isfile(os.path.join(out, "ca.crt")))
        self.assertEqual(mode(out) & 0o700, 0o700)


class IssueTest(CertTestCase):
    def setUp(self):
        super().setUp()
        self.ca = self.make_ca()

    def issue(self, out, *args, **kwargs):
        out = self.path(out)
        self.run_ok("issue", "--ca", self.ca, "--out", out, *args, **kwargs)
        return out

    def test_spiffe_leaf(self):
        out = self.issue("web", "--spiffe-id", WEB, "--dns", "web.default.svc")
        self.assertEqual(sorted(os.listdir(out)), ["ca.crt", "tls.crt", "tls.key"])
        self.assertVerifies(out)
        self.assertEqual(mode(os.path.join(out, "tls.key")), 0o600)
        self.assertEqual(mode(os.path.join(out, "tls.crt")), 0o644)
        self.assertKeyMatches(os.path.join(out, "tls.key"), os.path.join(out, "tls.crt"))

        # A root CA's leaf: tls.crt is the leaf alone, ca.crt is the CA's ca.crt.
        self.assertEqual(len(pem_certs(os.path.join(out, "tls.crt"))), 1)
        self.assertEqual(read_text(os.path.join(out, "ca.crt")),
                         read_text(os.path.join(self.ca, "ca.crt")))

        text = cert_text(os.path.join(out, "tls.crt"))
        self.assertIn(f"URI:{WEB}", text)
        self.assertIn("DNS:web.default.svc", text)
        self.assertRegex(text, r"Basic Constraints: critical\s+CA:FALSE")
        self.assertRegex(text, r"Key Usage: critical\s+Digital Signature\n")
        self.assertRegex(text, r"Extended Key Usage:\s*\n\s+TLS Web Server Authentication, "
                               r"TLS Web Client Authentication")
        self.assertIn("Authority Key Identifier", text)
        self.assertRegex(text, r"Issuer: O ?= ?mtlsd, CN ?= ?cluster.local root CA")

    def test_serial_is_random_positive_16_bytes(self):
        serials = set()
        for i in range(3):
            out = self.issue(f"leaf{i}", "--dns", "a.example.com")
            serial = openssl("x509", "-in", os.path.join(out, "tls.crt"), "-noout",
                             "-serial").stdout.strip().split("=", 1)[1]
            self.assertEqual(len(serial), 32, serial)
            self.assertLess(int(serial[0], 16), 8, "positive: the top bit is clear")
            serials.add(serial)
        self.assertEqual(len(serials), 3)

    def test_default_validity_is_90_days(self):
        out = self.issue("leaf", "--dns", "a.example.com")
        not_before, not_after = cert_dates(os.path.join(out, "tls.crt"))
        self.assertAbout(not_before, now())
        self.assertAbout(not_after, now() + datetime.timedelta(days=90))

    def test_days_and_hours(self):
        out = self.issue("days", "--dns", "a.example.com", "--days", "7")
        _, not_after = cert_dates(os.path.join(out, "tls.crt"))
        self.assertAbout(not_after, now() + datetime.timedelta(days=7))
        out = self.issue("hours", "--dns", "a.example.com", "--hours", "2")
        _, not_after = cert_dates(os.path.join(out, "tls.crt"))
        self.assertAbout(not_after, now() + datetime.timedelta(hours=2))

    def test_dns_only_and_wildcard(self):
        out = self.issue("dns", "--dns", "api.example.com", "--dns", "*.example.com")
        self.assertVerifies(out)
        text = cert_text(os.path.join(out, "tls.crt"))
        self.assertIn("DNS:api.example.com, DNS:*.example.com", text)
        self.assertNotIn("URI:", text)
        self.assertRegex(text, r"Subject: O ?= ?mtlsd, CN ?= ?api.example.com")

    def test_key_types(self):
        for key_type, curve_or_bits, usage in [
                ("ecdsa-p256", "prime256v1", "Digital Signature\n"),
                ("ecdsa-p384", "secp384r1", "Digital Signature\n"),
                ("rsa-2048", "Public-Key: (2048 bit)", "Digital Signature, Key Encipherment\n")]:
            with self.subTest(key_type=key_type):
                out = self.issue(key_type, "--spiffe-id", WEB, "--key-type", key_type)
                self.assertVerifies(out)
                self.assertKeyMatches(os.path.join(out, "tls.key"),
                                      os.path.join(out, "tls.crt"))
                text = cert_text(os.path.join(out, "tls.crt"))
                self.assertIn(curve_or_bits, text)
                self.assertRegex(text, r"Key Usage: critical\s+" + re.escape(usage))

    def test_rsa_ca_signs_with_sha256(self):
        rsa_ca = self.path("rsa-ca")
        self.run_ok("ca", "--out", rsa_ca, "--key-type", "rsa-2048")
        out = self.path("leaf")
        self.run_ok("issue", "--ca", rsa_ca, "--out", out, "--spiffe-id", WEB)
        self.assertVerifies(out)
        self.assertIn("sha256WithRSAEncryption", cert_text(os.path.join(out, "tls.crt")))

    def test_expired(self):
        out = self.issue("old", "--spiffe-id", WEB, "--not-after", "2021-06-01T12:00:00Z")
        not_before, not_after = cert_dates(os.path.join(out, "tls.crt"))
        self.assertEqual(not_after, datetime.datetime(2021, 6, 1, 12, tzinfo=datetime.timezone.utc))
        self.assertLess(not_before, not_after)
        proc = openssl("verify", "-CAfile", os.path.join(out, "ca.crt"),
                       os.path.join(out, "tls.crt"), check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("expired", proc.stdout + proc.stderr)

    def test_not_yet_valid(self):
        out = self.issue("new", "--spiffe-id", WEB, "--not-before", "2099-01-01T00:00:00Z",
                         "--days", "1")
        not_before, not_after = cert_dates(os.path.join(out, "tls.crt"))
        self.assertEqual(not_before, datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc))
        self.assertEqual(not_after - not_before, datetime.timedelta(days=1))
        proc = openssl("verify", "-CAfile", os.path.join(out, "ca.crt"),
                       os.path.join(out, "tls.crt"), check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("not yet valid", proc.stdout + proc.stderr)

    def test_explicit_window_with_offset(self):
        out = self.issue("window", "--dns", "a.example.com",
                         "--not-before", "2030-01-01T02:00:00+02:00",
                         "--not-after", "2030-01-02T00:00:00.5Z")
        not_before, not_after = cert_dates(os.path.join(out, "tls.crt"))
        utc = datetime.timezone.utc
        self.assertEqual(not_before, datetime.datetime(2030, 1, 1, tzinfo=utc))
        self.assertEqual(not_after, datetime.datetime(2030, 1, 2, tzinfo=utc))

    def test_reissue_replaces_files_atomically(self):
        out = self.issue("leaf", "--dns", "one.example.com")
        first = read_text(os.path.join(out, "tls.crt"))
        self.issue("leaf", "--dns", "two.example.com")
        second = read_text(os.path.join(out, "tls.crt"))
        self.assertNotEqual(first, second)
        self.assertIn("DNS:two.example.com", cert_text(os.path.join(out, "tls.crt")))
        # No temporary file is left behind.
        self.assertEqual(sorted(os.listdir(out)), ["ca.crt", "tls.crt", "tls.key"])
        self.assertKeyMatches(os.path.join(out, "tls.key"), os.path.join(out, "tls.crt"))

    def test_key_mode_ignores_umask(self):
        out = self.issue("leaf", "--spiffe-id", WEB, umask=0)
        self.assertEqual(mode(os.path.join(out, "tls.key")), 0o600)
        self.assertEqual(mode(os.path.join(out, "tls.crt")), 0o644)

    def test_intermediate(self):
        inter = self.path("inter")
        self.run_ok("issue", "--ca", self.ca, "--out", inter, "--intermediate")
        self.assertEqual(sorted(os.listdir(inter)), ["ca.crt", "ca.key", "root.crt"])
        self.assertEqual(mode(os.path.join(inter, "ca.key")), 0o600)
        text = cert_text(os.path.join(inter, "ca.crt"))
        self.assertRegex(text, r"Basic Constraints: critical\s+CA:TRUE, pathlen:0")
        self.assertRegex(text, r"Key Usage: critical\s+Certificate Sign, CRL Sign\n")
        openssl("verify", "-CAfile", os.path.join(inter, "root.crt"),
                os.path.join(inter, "ca.crt"))

        out = self.path("leaf")
        self.run_ok("issue", "--ca", inter, "--out", out, "--spiffe-id", WEB)
        # tls.crt is the leaf then the intermediate; ca.crt is the root.
        chain = pem_certs(os.path.join(out, "tls.crt"))
        self.assertEqual(len(chain), 2)
        self.assertEqual(chain[1], pem_certs(os.path.join(inter, "ca.crt"))[0])
        self.assertEqual(pem_certs(os.path.join(out, "ca.crt")),
                         pem_certs(os.path.join(self.ca, "ca.crt")))
        self.assertVerifies(out)
        # Without the intermediate the leaf does not chain to the root alone.
        proc = openssl("verify", "-CAfile", os.path.join(out, "ca.crt"),
                       os.path.join(out, "tls.crt"), check=False)
        self.assertNotEqual(proc.returncode, 0)

        # An intermediate cannot make another intermediate (path length 0).
        proc = mtlsd("issue", "--ca", inter, "--out", self.path("inter2"), "--intermediate")
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("intermediate", proc.stderr)


class ErrorTest(CertTestCase):
    def assertUsageError(self, args, message):
        proc = mtlsd(*args)
        self.assertEqual(proc.returncode, 2, f"{args}: {proc.stderr}")
        self.assertIn(message, proc.stderr)
        self.assertIn("usage:", proc.stderr)
        self.assertEqual(proc.stdout, "")

    def test_usage_errors(self):
        ca = self.make_ca()
        out = self.path("out")
        cases = [
            ([], "usage:"),
            (["frob"], 'unknown subcommand "frob"'),
            (["ca"], "--out DIR is required"),
            (["ca", "--out", out, "--bogus"], 'unknown option "--bogus"'),
            (["ca", "--out"], "--out needs a value"),
            (["ca", "--out", out, "stray"], 'unexpected argument "stray"'),
            (["ca", "--out", out, "--out", out], "--out given more than once"),
            (["ca", "--out", out, "--days", "0"], "--days"),
            (["ca", "--out", out, "--days", "10x"], "--days"),
            (["ca", "--out", out, "--days", "-5"], "--days"),
            (["ca", "--out", out, "--days", "1", "--hours", "1"], "--hours"),
            (["ca", "--out", out, "--key-type", "dsa"], "--key-type"),
            (["ca", "--out", out, "--trust-domain", "Cluster.Local"], "trust domain"),
            (["ca", "--out", out, "--spiffe-id", WEB], 'unknown option "--spiffe-id"'),
            (["ca", "--out", out, "--name", "x" * 65], "--name"),
            (["issue", "--out", out, "--dns", "a.b"], "--ca DIR is required"),
            (["issue", "--ca", ca, "--dns", "a.b"], "--out DIR is required"),
            (["issue", "--ca", ca, "--out", out], "at least one --spiffe-id or --dns"),
            (["issue", "--ca", ca, "--out", out, "--spiffe-id", "spiffe://td/a/"],
             "invalid SPIFFE ID: path cannot have a trailing slash"),
            (["issue", "--ca", ca, "--out", out, "--spiffe-id", "spiffe://TD/a"],
             "invalid SPIFFE ID: trust domain must be lowercase"),
            (["issue", "--ca", ca, "--out", out, "--spiffe-id", "https://td/a"],
             "invalid SPIFFE ID: scheme"),
            (["issue", "--ca", ca, "--out", out, "--dns", "a_b.example.com"],
             "invalid DNS name"),
            (["issue", "--ca", ca, "--out", out, "--dns", "a.b", "--not-after", "tomorrow"],
             "RFC 3339"),
            (["issue", "--ca", ca, "--out", out, "--dns", "a.b",
              "--not-after", "2030-02-30T00:00:00Z"], "RFC 3339"),
            (["issue", "--ca", ca, "--out", out, "--dns", "a.b",
              "--not-before", "2030-01-02T00:00:00Z", "--not-after", "2030-01-01T00:00:00Z"],
             "--not-after must be later than --not-before"),
            (["issue", "--ca", ca, "--out", out, "--intermediate", "--dns", "a.b"],
             "--intermediate"),
            (["issue", "--ca", ca, "--out", ca, "--dns", "a.b"], "same directory"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                self.assertUsageError(args, message)
        self.assertFalse(os.path.exists(out), "nothing is written on a usage error")
        self.assertEqual(sorted(os.listdir(ca)), ["ca.crt", "ca.key"])

    def test_help(self):
        for args in (["--help"], ["ca", "--help"], ["issue", "--out", "x", "--help"]):
            with self.subTest(args=args):
                proc = mtlsd(*args)
                self.assertEqual(proc.returncode, 0)
                self.assertIn("usage: mtlsd cert ca", proc.stdout)
                self.assertIn("mtlsd cert issue", proc.stdout)
                self.assertEqual(proc.stderr, "")

    def test_missing_ca_files(self):
        empty = self.path("empty")
        os.mkdir(empty)
        proc = mtlsd("issue", "--ca", empty, "--out", self.path("out"), "--dns", "a.b")
        self.assertEqual(proc.returncode, 1)
        self.assertIn(f"cert issue: --ca {empty}: cannot read {empty}/ca.crt: "
                      "No such file or directory", proc.stderr)

        ca = self.make_ca()
        os.unlink(os.path.join(ca, "ca.key"))
        proc = mtlsd("issue", "--ca", ca, "--out", self.path("out"), "--dns", "a.b")
        self.assertEqual(proc.returncode, 1)
        self.assertIn(f"cert issue: --ca {ca}: cannot read {ca}/ca.key: "
                      "No such file or directory", proc.stderr)
        self.assertFalse(os.path.exists(self.path("out")))

    def test_bad_ca_files(self):
        ca = self.make_ca()
        other = self.make_ca("other")
        # A key that belongs to another CA.
        shutil.copy(os.path.join(other, "ca.key"), os.path.join(ca, "ca.key"))
        proc = mtlsd("issue", "--ca", ca, "--out", self.path("out"), "--dns", "a.b")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("matches no certificate", proc.stderr)

        with open(os.path.join(ca, "ca.crt"), "w", encoding="ascii") as f:
            f.write("not a certificate\n")
        proc = mtlsd("issue", "--ca", ca, "--out", self.path("out"), "--dns", "a.b")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("not a PEM certificate", proc.stderr)

        # A leaf directory is not a CA, even with its files renamed to look like one.
        leaf = self.path("leaf")
        self.run_ok("issue", "--ca", other, "--out", leaf, "--dns", "a.b")
        os.rename(os.path.join(leaf, "tls.crt"), os.path.join(leaf, "ca.crt"))
        os.rename(os.path.join(leaf, "tls.key"), os.path.join(leaf, "ca.key"))
        proc = mtlsd("issue", "--ca", leaf, "--out", self.path("out"), "--dns", "a.b")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("not a CA", proc.stderr)
        self.assertNotIn("PRIVATE KEY", proc.stdout + proc.stderr)


if __name__ == "__main__":
    unittest.main()
