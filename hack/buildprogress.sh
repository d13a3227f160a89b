#!/usr/bin/env bash
# buildprogress.sh NAME DIR -- GO build [build flags] PKG...
#
# Runs `GO build -v [build flags] PKG...` in DIR (the build flags untouched, so the build cache is
# shared with plain builds) and prints, every PROGRESS_INTERVAL seconds (default 30), how far it is:
#
#   >> kube-apiserver: 812/2143 packages compiled (3m30s)
#   >> kube-apiserver built in 12m02s (2143/2143 packages compiled)
#
# The total is the packages outside the standard library in `GO list -deps` with the same flags
# (the one listing, on a first run, downloads the modules: their "go: downloading" lines show).
# `go build -v` names a package when it compiles it, so those served by the build cache are not
# counted: a warm build ends below the total, and quickly. Standard-library packages are left out
# of both counts (whether they are cached depends on what else was built). The build's other lines
# (compiler errors) go to stderr, and its exit status is this script's.
set -euo pipefail

usage() {
	echo "usage: $0 NAME DIR -- GO build [build flags] PKG..." >&2
	exit 2
}
[[ $# -ge 5 && $3 == -- ]] || usage
name=$1 dir=$2
shift 3
go=()
while [[ $# -gt 0 && $1 != build ]]; do
	go+=("$1")
	shift
done
[[ ${#go[@]} -gt 0 && $# -ge 2 ]] || usage
shift
build_args=("$@")
interval=${PROGRESS_INTERVAL:-30}
[[ $interval =~ ^[1-9][0-9]*$ ]] || {
	echo "$0: PROGRESS_INTERVAL must be a whole number of seconds, not '$interval'" >&2
	exit 2
}

# go list takes the build flags, except -o.
list_args=()
for ((i = 0; i < ${#build_args[@]}; i++)); do
	case ${build_args[i]} in
	-o) i=$((i + 1)) ;;
	-o=* | -v) ;;
	*) list_args+=("${build_args[i]}") ;;
	esac
done

tmp=$(mktemp -d)
fifo=$tmp/out
mkfifo "$fifo"
pid=
cleanup() {
	if [[ -n $pid ]]; then # interrupted: the go command and the compilers it runs
		kill -TERM -- "-$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$dir"
start=$SECONDS
last=$start
phase=list
compiled=0
total=0

elapsed() {
	local s=$((SECONDS - start))
	if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# Import paths outside the standard library: a dot in the first element (the standard library has
# none; a module that can be downloaded must have one).
nonstd() { [[ ${1%%/*} == *.* ]]; }

progress() {
	local n=$compiled
	((n <= total)) || n=$total
	if [[ $phase == list ]]; then
		echo ">> $name: listing its packages, downloading the modules not yet in the module cache ($(elapsed))"
	else
		echo ">> $name: $n/$total packages compiled ($(elapsed))"
	fi
	last=$SECONDS
}

on_line() {
	local l=$1
	# go build -v prints one import path a line; anything else (compiler errors, "# pkg"
	# headers, go: messages) goes on to stderr.
	if [[ $phase == build && -n $l && $l != *[[:space:]:]* && $l != '#'* ]]; then
		if nonstd "$l"; then compiled=$((compiled + 1)); fi
	else
		printf '%s\n' "$l" >&2
	fi
}

# pump: read the background command's output from the fifo until it ends, a line at a time,
# printing progress every interval; then wait for the command and return its exit status.
pump() {
	local part line='' rc=0
	exec 3<"$fifo"
	while :; do
		part=
		if IFS= read -r -t 1 -u 3 part; then
			on_line "$line$part"
			line=
		else
			rc=$?
			if ((rc <= 128)); then # end of output
				[[ -z $line$part ]] || on_line "$line$part"
				break
			fi
			line=$line$part # timed out in the middle of a line
		fi
		((SECONDS - last < interval)) || progress
	done
	exec 3<&-
	rc=0
	wait "$pid" || rc=$?
	pid=
	return "$rc"
}

# Each go command runs in the background, in a process group of its own (job control on while
# it starts), so that cleanup can end it with the compilers it runs.
set -m
"${go[@]}" list -deps "${list_args[@]}" >"$tmp/deps" 2>"$fifo" &
pid=$!
set +m
rc=0
pump || rc=$?
if ((rc != 0)); then
	echo ">> $name: listing its packages failed after $(elapsed)" >&2
	exit "$rc"
fi
while IFS= read -r p; do
	if nonstd "$p"; then total=$((total + 1)); fi
done <"$tmp/deps"

phase=build
progress
set -m
"${go[@]}" build -v "${build_args[@]}" >"$fifo" 2>&1 &
pid=$!
set +m
pump || rc=$?
n=$compiled
((n <= total)) || n=$total
if ((rc != 0)); then
	echo ">> $name: build failed after $(elapsed) ($n/$total packages compiled)" >&2
	exit "$rc"
fi
if ((n < total)); then
	echo ">> $name built in $(elapsed) ($n/$total packages compiled, the others came from the build cache)"
else
	echo ">> $name built in $(elapsed) ($n/$total packages compiled)"
fi
