#!/usr/bin/env bash
# Extract the pinned dstack-mr sources (and the two workspace crates it needs)
# from a local git clone or mirror of Dstack-TEE/dstack into ./dstack-src/.
#
# dstack-mr is not published on crates.io, so this checker uses it as a path
# dependency. Nothing extracted here is meant to be committed (see .gitignore).
#
#   DSTACK_GIT=/path/to/dstack.git ./fetch-dstack-src.sh
#
# DSTACK_GIT: a clone (its .git) or bare mirror of Dstack-TEE/dstack that contains
# the pinned commit. DSTACK_SRC: where to extract (default ./dstack-src; any other
# place is symlinked from ./dstack-src, which is what Cargo.toml points at).
set -euo pipefail

COMMIT=312dc605ebaaf93372534ffb135ea011533d28e9 # dstack-mr 0.6.0
HERE=$(cd "$(dirname "$0")" && pwd)
GIT_DIR_IN=${DSTACK_GIT:-/work/.mirror/Dstack-TEE+dstack/repo}
DEST=${DSTACK_SRC:-$HERE/dstack-src}

if ! git --git-dir "$GIT_DIR_IN" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
    echo "error: $GIT_DIR_IN has no commit $COMMIT; set DSTACK_GIT to a Dstack-TEE/dstack clone" >&2
    exit 2
fi

PATHS=(dstack/Cargo.toml dstack/dstack-mr dstack/dstack-types dstack/size-parser)
rm -rf "$DEST"
mkdir -p "$DEST"
# A partial mirror may lack blobs outside PATHS; git archive then warns about
# them on stderr although it writes every requested file, so the result is
# checked by count instead.
ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT
git --git-dir "$GIT_DIR_IN" archive "$COMMIT" "${PATHS[@]}" 2>"$ERR" | tar -x -C "$DEST"
want=$(git --git-dir "$GIT_DIR_IN" ls-tree -r "$COMMIT" "${PATHS[@]}" | wc -l)
got=$(find "$DEST" -type f | wc -l)
if [ "$want" -ne "$got" ]; then
    cat "$ERR" >&2
    echo "error: extracted $got files, expected $want" >&2
    exit 2
fi
if [ "$DEST" != "$HERE/dstack-src" ]; then
    ln -sfn "$DEST" "$HERE/dstack-src"
fi
echo "extracted dstack-mr at $COMMIT into $DEST"
