#!/usr/bin/env bash
# Runs every test: unit tests, and kernel tests that load the real BPF programs
# (as root; without root they skip locally and fail in CI). Prints
# "N passed, N failed" last.
set -euo pipefail
cd "$(dirname "$0")"
export FORENSICS_DEV=1
source scripts/prereqs.sh

if command -v clang-14 >/dev/null 2>&1 && [[ -e /usr/include/bpf/bpf_helpers.h ]]; then
  make -s -C bpf check
fi

# An independent Arrow reader for the tests (tests/arrow/read-arrow.cjs), installed once into out/ (the
# tests run without network); when npm cannot fetch it the Arrow tests fail in CI rather than skip.
if [[ ! -d out/arrow-reader/node_modules/apache-arrow ]] && command -v npm >/dev/null 2>&1; then
  npm install --prefix out/arrow-reader --no-save --no-audit --no-fund --loglevel=error apache-arrow@21.2.0 >/dev/null \
    || echo "warning: npm could not install apache-arrow into out/arrow-reader: the Arrow tests will fail"
fi

results=out/test-results
rm -rf "$results"
dotnet build Forensics.sln -c Release -nologo -v quiet
status=0
# Kernel tests run in private network and mount namespaces (scripts/private-ns.sh): they cannot
# disturb the machine's network, and two runs on one machine cannot disturb each other.
scripts/private-ns.sh dotnet test Forensics.sln -c Release --no-build -nologo \
  --logger "trx" --logger "console;verbosity=normal" --results-directory "$results" \
  --blame-hang-timeout 10m "$@" || status=$?

passed=0; failed=0; skipped=0
shopt -s nullglob
for trx in "$results"/*.trx; do
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
  passed=$((passed + $(get passed)))
  failed=$((failed + $(get failed) + $(get error) + $(get timeout) + $(get aborted)))
  skipped=$((skipped + $(get notExecuted)))
done
# CI shows only the end of the output: name each test that did not pass, with the first line of why.
for trx in "$results"/*.trx; do
  # perl is in every Debian (perl-base); the trx is one XML file per test project.
  perl -0777 -ne '
    while (/<UnitTestResult\b([^>]*?)(?:\/>|>(.*?)<\/UnitTestResult>)/gs) {
      my ($attrs, $body) = ($1, $2 // "");
      my ($outcome) = $attrs =~ /outcome="([^"]*)"/;
      next if $outcome eq "Passed" || $outcome eq "NotExecuted";
      my ($name) = $attrs =~ /testName="([^"]*)"/;
      my ($message) = $body =~ /<Message>\s*([^\n<]*)/;
      printf "FAILED %s: %s\n", $name, substr($message // $outcome, 0, 300);
    }' "$trx" || true
done
if [[ "${CI:-}" == true && $skipped -gt 0 ]]; then
  echo "CI: $skipped skipped tests count as failed (kernel tests must run in CI)"
  failed=$((failed + skipped)); skipped=0
fi
if [[ $status -ne 0 && $failed -eq 0 ]]; then failed=1; fi
echo "$skipped skipped"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
