#!/usr/bin/env bash
# lnm-factory-reset: put the appliance's settings back to those shipped with the
# installed release, and either keep or wipe the cases: the operator says which.
#
#     sudo lnm-factory-reset --keep-cases
#     sudo lnm-factory-reset --wipe-cases
set -euo pipefail

PROG="lnm-factory-reset"
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'USAGE'
usage: sudo lnm-factory-reset (--keep-cases | --wipe-cases) [--yes] [--dry-run] [--root DIR]

Reset /etc/lnm and /etc/default/lnm to the settings shipped with the installed release
and clear the touchscreen's state (/var/lib/lnm/ui). Stops and restarts the services.

  --keep-cases   keep every case journal and report in /var/lib/lnm
  --wipe-cases   delete every case journal, report and log in /var/lib/lnm (asks you to
                 type WIPE; take a backup first with lnm-backup)
  --yes          do not ask for confirmation
  --dry-run      print every step, change nothing
  --root DIR     work on an appliance tree under DIR (tests, images)
Files are deleted, not shredded: before the appliance leaves the hospital, erase the
data partition (see deploy/README.md, "Decommissioning").
USAGE
}

CASES=""
while [ $# -gt 0 ]; do
    parse_common "$@"
    if [ "$SHIFT_BY" -gt 0 ]; then
        shift "$SHIFT_BY"
        continue
    fi
    case "$1" in
        --keep-cases | --wipe-cases)
            [ -z "$CASES" ] || [ "$CASES" = "$1" ] || die "--keep-cases or --wipe-cases, not both"
            CASES=$1
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown option $1"
            ;;
    esac
    shift
done
[ -n "$CASES" ] || {
    usage >&2
    die "say what happens to the cases: --keep-cases or --wipe-cases"
}
need_root

SHIPPED=${LNM_ROOT}$LNM_CURRENT/share/lnm
[ -f "$SHIPPED/config/default.toml" ] || die "no shipped configuration in $SHIPPED/config (is LNM installed?)"
DATA=${LNM_ROOT}$LNM_DATA

if [ "$CASES" = --wipe-cases ]; then
    confirm WIPE "Factory reset: every case in $DATA is DELETED and the settings go back to the shipped ones."
else
    confirm RESET "Factory reset: the settings go back to the shipped ones; the cases in $DATA are kept."
fi

step "Stopping the UI and the engine"
svc stop lnm-ui.service lnm-engine.service

step "Settings: back to the shipped ones"
ETC=${LNM_ROOT}$LNM_ETC
if [ -d "$ETC" ]; then
    for f in "$ETC"/* "$ETC"/.[!.]*; do
        if [ -e "$f" ] || [ -L "$f" ]; then run rm -rf "$f"; fi
    done
else
    run mkdir -p "$ETC"
fi
run cp "$SHIPPED/config/default.toml" "$ETC/default.toml"
run mkdir -p "$ETC/profiles"
for f in "$SHIPPED"/config/profiles/*.toml; do
    if [ -e "$f" ]; then run cp "$f" "$ETC/profiles/"; fi
done
run chmod -R u=rwX,g=rX,o= "$ETC"
if ! is_root_mode; then run chown -R "root:$LNM_GROUP" "$ETC"; fi
if [ -f "$SHIPPED/deploy/system/default-lnm" ]; then
    run cp "$SHIPPED/deploy/system/default-lnm" "${LNM_ROOT}/etc/default/lnm"
    run chmod 0644 "${LNM_ROOT}/etc/default/lnm"
fi

step "Touchscreen state"
if [ -d "$DATA/ui" ]; then
    for f in "$DATA"/ui/* "$DATA"/ui/.[!.]*; do
        if [ -e "$f" ] || [ -L "$f" ]; then run rm -rf "$f"; fi
    done
fi

if [ "$CASES" = --wipe-cases ]; then
    step "Wiping the cases in $DATA"
    for f in "$DATA"/* "$DATA"/.[!.]*; do
        if [ -e "$f" ] || [ -L "$f" ]; then run rm -rf "$f"; fi
    done
    for d in reports log ui; do
        run mkdir -p "$DATA/$d"
    done
    run chmod 0750 "$DATA" "$DATA/reports" "$DATA/log" "$DATA/ui"
    if ! is_root_mode; then run chown -R "$LNM_USER:$LNM_GROUP" "$DATA"; fi
else
    step "Cases kept in $DATA"
fi

step "Validating the settings"
run "$(lnm_cmd)" config-check "$ETC" || die "the shipped settings do not validate; report this release"

step "Starting the engine, then the UI"
svc start lnm-engine.service lnm-ui.service
say "Factory reset done ($CASES)."
