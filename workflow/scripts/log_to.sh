# Sourced by every rule's shell (the Snakefile's shell.prefix).
#
#   log_to LOG COMMAND [ARG...]
#
# runs COMMAND with its stderr in LOG, as `COMMAND 2> LOG` would. When COMMAND fails, it
# also prints the error to the console, where Snakemake shows it beside the failed rule:
# the last line of LOG that starts with `error: ` (what every wormgnn module says when
# it stops on bad input), else LOG's last line (an unexpected traceback's exception).
log_to() {
    local log=$1
    shift
    "$@" 2>"$log" && return 0
    local status=$? line
    line=$(grep -a '^error: ' "$log" | tail -n 1 || true)
    [ -n "$line" ] || line=$(tail -n 1 "$log" | tr '\r' '\n' | tail -n 1)
    printf '%s\n  (exit status %d; full log: %s)\n' "${line:-no output}" "$status" "$log" >&2
    return "$status"
}
