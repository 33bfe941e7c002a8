#!/usr/bin/env bash
# CHECK= program for kbuild's C=1, used by scripts/matrix.sh: kbuild calls it
# as "$CHECK <flags> <source.c>" for every C file it compiles; this runs
# sparse only on the files listed in $MATRIX_SPARSE_FILES (paths relative to
# the source tree, space-separated) and appends each file it checked to
# $MATRIX_SPARSE_LOG, so that matrix.sh can tell that sparse really ran.
src=${!#}
for f in ${MATRIX_SPARSE_FILES:-}; do
	case $src in
	"$f" | */"$f")
		[ -z "${MATRIX_SPARSE_LOG:-}" ] || echo "$f" >> "$MATRIX_SPARSE_LOG"
		exec sparse "$@" ;;
	esac
done
exit 0
