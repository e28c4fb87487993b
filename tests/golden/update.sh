#!/usr/bin/env bash
# Regenerates the expected outputs of the golden tests from the mtlsd binary given (or
# build/gcc/mtlsd): for each tests/golden/inject/NAME.in.{yaml,json}, NAME.out (stdout),
# NAME.err (stderr) and NAME.code (exit code). Review the diff before committing it: the
# files are the contract that test_golden.py holds the code to.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
mtlsd=${1:-$top/build/gcc/mtlsd}
for input in "$top"/tests/golden/inject/*.in.*; do
  base=${input%.in.*}
  set +e
  "$mtlsd" inject -f "$input" >"$base.out" 2>"$base.err"
  echo $? >"$base.code"
  set -e
  # The file's path varies with the checkout: keep it out of the expected text.
  sed -i "s|$top/||g" "$base.err"
done
