#!/usr/bin/env bash
# Build the rdstokencheck PAM helper (tests/support/rdstokencheck) into
#   ${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/bin/rdstokencheck
# and, beside it, the PAM module pam_tokenexec.so (tests/support/pam_tokenexec), which runs the
# checker with the whole token (pam_exec cuts passwords at 511 bytes), as
#   .../bin/rdstokencheck-pam_tokenexec.so
# Skips the build when both exist and the recorded hash of go.mod + go.sum +
# main.go + pam_tokenexec.c matches. Progress goes to stderr; the last line
# on stdout is the binary's path.
#
# Note: the binary is run by PAM as the postgres OS user, so the directory it
# lands in must be traversable by that user (e.g. /root/.cache is not).
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/rdstokencheck" && pwd)"
cache="${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}"
out="$cache/bin/rdstokencheck"
stamp="$out.srchash"

module_src="$(dirname "$src")/pam_tokenexec/pam_tokenexec.c"
hash="$( { cd "$src" && cat go.mod go.sum main.go "$module_src"; } | sha256sum | cut -d' ' -f1)"

if [[ -x "$out" && -f "$out-pam_tokenexec.so" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
    echo "rdstokencheck: up to date ($hash)" >&2
    echo "$out"
    exit 0
fi

command -v go >/dev/null || { echo "rdstokencheck: go not found on PATH" >&2; exit 1; }
mkdir -p "$cache/bin"
tmp="$(mktemp "$cache/bin/.rdstokencheck.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

echo "rdstokencheck: building ($hash)" >&2
start=$SECONDS
(
    cd "$src"
    GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
        go build -trimpath -ldflags='-s -w' -o "$tmp" .
)
chmod 0755 "$tmp"
cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$tmp.so" "$module_src" -lpam ||
    { rm -f "$tmp.so"; echo "rdstokencheck: cannot build pam_tokenexec.so (apt-get install gcc libpam0g-dev)" >&2; exit 1; }
mv -f "$tmp.so" "$out-pam_tokenexec.so"
mv -f "$tmp" "$out"
trap - EXIT
echo "$hash" >"$stamp"
echo "rdstokencheck: built in $((SECONDS - start))s" >&2
echo "$out"
