#!/bin/sh
# Installs Node and npm from the npm registry when the base image has no npm.
set -eu
node_version=$1 npm_version=$2 registry=$3
if command -v npm >/dev/null 2>&1; then
    exit 0
fi
case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "install-node: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
tmp=$(mktemp -d)
curl -fsSL "$registry/node-linux-$arch/-/node-linux-$arch-$node_version.tgz" | tar -xz -C "$tmp"
install -m 0755 "$tmp/package/bin/node" /usr/local/bin/node
mkdir -p /usr/local/lib/node_modules/npm
curl -fsSL "$registry/npm/-/npm-$npm_version.tgz" \
    | tar -xz -C /usr/local/lib/node_modules/npm --strip-components=1
ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
rm -rf "$tmp"
node --version
npm --version
