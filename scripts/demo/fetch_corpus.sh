#!/usr/bin/env bash
# Fetch the demo corpus: the Python 3.11 documentation reST sources shipped in Debian's
# python3.11-doc package (PSF licence). Uses apt's ordinary client; nothing is installed
# system-wide: the .deb is unpacked into .work/corpus/root.
set -euo pipefail
cd "$(dirname "$0")/../.."
CORPUS_DIR=.work/corpus
mkdir -p "$CORPUS_DIR"
cd "$CORPUS_DIR"
if ! ls python3.11-doc_*.deb >/dev/null 2>&1; then
    apt-get download python3.11-doc
fi
rm -rf root
dpkg -x python3.11-doc_*.deb root
find root/usr/share/doc/python3.11/html/_sources -name '*.rst.txt' | wc -l
