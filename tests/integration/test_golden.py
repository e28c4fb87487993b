"""Golden tests of `mtlsd inject`: for every tests/golden/inject/NAME.in.{yaml,json}, the
output, the report on stderr and the exit code must be exactly NAME.out, NAME.err and
NAME.code (regenerate them with tests/golden/update.sh and review the diff). And the
output injected again must come back unchanged, byte for byte: injection is idempotent
and the YAML written is a fixed point of reading and writing."""

import glob
import os
import subprocess
import unittest

from harness import MTLSD

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN = os.path.join("tests", "golden", "inject")


def run_inject(path):
    return subprocess.run([MTLSD, "inject", "-f", path], capture_output=True, text=True,
                          timeout=30, cwd=TOP)


class GoldenTest(unittest.TestCase):
    def test_every_case(self):
        inputs = sorted(glob.glob(os.path.join(TOP, GOLDEN, "*.in.*")))
        self.assertGreaterEqual(len(inputs), 8)
        for path in inputs:
            name = os.path.basename(path).split(".in.")[0]
            rel = os.path.join(GOLDEN, os.path.basename(path))
            base = os.path.join(TOP, GOLDEN, name)
            with self.subTest(case=name):
                with open(base + ".out") as f:
                    want_out = f.read()
                with open(base + ".err") as f:
                    want_err = f.read()
                with open(base + ".code") as f:
                    want_code = int(f.read())
                r = run_inject(rel)
                self.assertEqual(r.returncode, want_code, r.stderr)
                self.assertEqual(r.stderr, want_err)
                self.assertEqual(r.stdout, want_out)

    def test_injecting_the_outputs_again_changes_nothing(self):
        for out in sorted(glob.glob(os.path.join(TOP, GOLDEN, "*.out"))):
            with open(out) as f:
                text = f.read()
            if not text:
                continue
            with self.subTest(case=os.path.basename(out)):
                r = subprocess.run([MTLSD, "inject"], input=text, capture_output=True,
                                   text=True, timeout=30)
                self.assertIn(r.returncode, (0, 1), r.stderr)
                self.assertEqual(r.stdout, text)
                self.assertNotIn(": injected", r.stderr)


if __name__ == "__main__":
    unittest.main()
