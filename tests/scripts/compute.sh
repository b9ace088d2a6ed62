#!/bin/bash
# Deterministic bash workload for lifeboat's continuation tests.
#
# usage: compute.sh [STEPS=40] [DELAY=0.04]
#
# Uses builtins only (no forks, no external sleep).  It paces itself with
# `read -t DELAY` on stdin, which the tests keep open without ever writing
# to it; when stdin is at end of file it falls back to a busy arithmetic
# loop.  Keeps a running hash plus indexed and associative arrays and prints
# one progress line per step.  stdout depends only on the arguments.

steps=${1:-40}
delay=${2:-0.04}
acc=12345
declare -a history=()
declare -A table=()

pace() {
    local line rc
    read -r -t "$delay" -u 0 line
    rc=$?
    if ((rc > 0 && rc <= 128)); then
        # End of input: no blocking descriptor to wait on, spin instead.
        local i
        for ((i = 0; i < 20000; i++)); do :; done
    fi
}

corrupt() {
    printf 'CORRUPTION: %s\n' "$1" >&2
    exit 2
}

for ((step = 0; step < steps; step++)); do
    for ((i = 0; i < 200; i++)); do
        ((acc = ((acc ^ (i + step * 7919)) * 16777619) & 0xFFFFFFFF))
    done
    key="k$((acc % 53))"
    table[$key]=$(((${table[$key]:-0} + acc) & 0xFFFFFFFF))
    history+=("$acc")
    ((${#history[@]} == step + 1)) || corrupt "history has ${#history[@]} entries at step $step"
    sum=0
    for k in "${!table[@]}"; do
        ((sum = (sum + ${table[$k]} * ${#k}) & 0xFFFFFFFF))
    done
    printf 'step %d acc %08x keys %d sum %08x\n' "$step" "$acc" "${#table[@]}" "$sum"
    pace
done

digest=0
for h in "${history[@]}"; do
    ((digest = ((digest ^ h) * 16777619) & 0xFFFFFFFF))
done
printf 'done steps %d digest %08x\n' "$steps" "$digest"
