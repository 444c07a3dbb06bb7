#!/bin/sh
# Used by every Dockerfile: split the optional PEM bundles of infra/certs/*.crt into one file per
# certificate (update-ca-certificates and Java's cacerts hook take the first certificate of a file
# only) and add them to the system trust store. Without *.crt files this only installs ca-certificates.
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null
mkdir -p /usr/local/share/ca-certificates/cdclab
n=0
for bundle in /tmp/certs/*.crt; do
  [ -f "$bundle" ] || continue
  awk -v dir=/usr/local/share/ca-certificates/cdclab -v base="$(basename "$bundle" .crt)" '
    /-----BEGIN CERTIFICATE-----/ { n++; out = sprintf("%s/%s-%04d.crt", dir, base, n) }
    out { print > out }
    /-----END CERTIFICATE-----/ { close(out); out = "" }' "$bundle"
  n=$((n + 1))
done
update-ca-certificates >/dev/null 2>&1
echo "cdclab: CA bundles from infra/certs: $n"
