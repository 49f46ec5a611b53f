#!/usr/bin/env bash
# The test command: builds in release mode (the model tests run real networks) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product gptq
swift test -c release -Xswiftc -enable-testing "$@"
