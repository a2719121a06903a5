#!/usr/bin/env bash
# lnm-restore: put the case journal (and, if asked, the settings) back from a backup
# archive written by lnm-backup.
#
#     sudo lnm-restore /media/usb-stick/lnm-backup-lnm-20260304T083000Z.tar.gz
#
# Nothing is lost: the archive's checksums and every case's hash chain are checked
# before anything is touched, and the journal being replaced is moved aside to
# /var/lib/lnm/pre-restore-UTC/, never deleted. Monitoring stops while it runs.
set -euo pipefail

PROG="lnm-restore"
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: sudo lnm-restore [--dry-run] [--yes] [--root DIR] [--with-config] ARCHIVE

Restore the case journal from ARCHIVE (lnm-backup-*.tar.gz). Stops the engine and the
UI, moves the present journal to /var/lib/lnm/pre-restore-UTC/, puts the backup's in
place, starts the services again.

  --with-config  restore /etc/lnm and /etc/default/lnm too (the present ones are kept
                 as /etc/lnm.pre-restore-UTC)
  --yes          do not ask for confirmation
  --dry-run      print every step, change nothing
  --root DIR     work on an appliance tree under DIR (tests, images)
Never during a case: monitoring stops while the restore runs.
EOF
}

ARCHIVE=""
WITH_CONFIG=0
while [ $# -gt 0 ]; do
    parse_common "$@"
    if [ "$SHIFT_BY" -gt 0 ]; then
        shift "$SHIFT_BY"
        continue
    fi
    case "$1" in
        --with-config) WITH_CONFIG=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            usage >&2
            die "unknown option $1"
            ;;
        *)
            [ -z "$ARCHIVE" ] || die "one archive only"
            ARCHIVE=$1
            ;;
    esac
    shift
done
[ -n "$ARCHIVE" ] || {
    usage >&2
    die "say which backup archive to restore"
}
[ -f "$ARCHIVE" ] || die "$ARCHIVE: no such file"
need_root

DATA=${LNM_ROOT}$LNM_DATA
STAMP=$(utc_stamp)
[ -d "$DATA" ] || die "$DATA does not exist (is LNM installed, is the data partition mounted?)"

# Unpacked next to the data (same file system: the final moves are renames); a dry
# run unpacks to a temporary directory instead and touches nothing of the appliance.
if [ "$DRY_RUN" = 1 ]; then
    STAGE=$(mktemp -d "${TMPDIR:-/tmp}/lnm-restore.XXXXXX")
else
    STAGE=$(mktemp -d "$DATA/.lnm-restore.XXXXXX")
fi
trap 'rm -rf "$STAGE"' EXIT

step "Checking $ARCHIVE"
tar -C "$STAGE" -xzf "$ARCHIVE" || die "$ARCHIVE: not a readable backup archive"
if [ ! -f "$STAGE/SHA256SUMS" ] || [ ! -f "$STAGE/BACKUP-INFO" ]; then
    die "$ARCHIVE: not an LNM backup (no SHA256SUMS or BACKUP-INFO)"
fi
(cd "$STAGE" && sha256sum --quiet --strict -c SHA256SUMS) ||
    die "$ARCHIVE: checksums do not match: the archive is damaged; nothing was restored"
mapfile -t JOURNALS < <(sqlite_files "$STAGE/data")
[ "${#JOURNALS[@]}" -gt 0 ] || die "$ARCHIVE: holds no case journal"
note "$(grep -E '^(created_utc|host|release)=' "$STAGE/BACKUP-INFO" | tr '\n' ' ')"

step "Verifying every case in the backup (lnm verify)"
for db in "${JOURNALS[@]}"; do
    verify_journal "$db" || die "a case in $ARCHIVE failed verification; nothing was restored"
    rm -f "$db-shm" "$db-wal"
done
if [ "$WITH_CONFIG" = 1 ]; then
    [ -f "$STAGE/etc/lnm/default.toml" ] || die "$ARCHIVE: holds no settings (made with --no-config)"
    step "Validating the backup's settings"
    run "$(lnm_cmd)" config-check "$STAGE/etc/lnm" || die "the settings in $ARCHIVE are not valid; nothing was restored"
fi

confirm RESTORE "Restoring stops monitoring and replaces the case journal in $DATA (the present one is kept in $LNM_DATA/pre-restore-$STAMP)."

step "Stopping the UI and the engine"
svc stop lnm-ui.service lnm-engine.service

step "Moving the present journal aside to $LNM_DATA/pre-restore-$STAMP"
ASIDE="$DATA/pre-restore-$STAMP"
run mkdir -p "$ASIDE"
while IFS= read -r db; do
    case "$db" in "$DATA"/pre-restore-* | "$DATA"/.lnm-restore.*) continue ;; esac
    rel=${db#"$DATA"/}
    run mkdir -p "$ASIDE/$(dirname "$rel")"
    for f in "$db" "$db-wal" "$db-shm"; do
        if [ -e "$f" ]; then run mv "$f" "$ASIDE/$(dirname "$rel")/"; fi
    done
done < <(sqlite_files "$DATA")

step "Putting the backup's journal in place"
for db in "${JOURNALS[@]}"; do
    rel=${db#"$STAGE/data"/}
    run mkdir -p "$DATA/$(dirname "$rel")"
    run chmod 0640 "$db"
    if ! is_root_mode; then run chown "$LNM_USER:$LNM_GROUP" "$db"; fi
    run mv "$db" "$DATA/$rel"
done
if ! is_root_mode; then run chown -R "$LNM_USER:$LNM_GROUP" "$ASIDE"; fi

if [ "$WITH_CONFIG" = 1 ]; then
    step "Restoring the settings (present ones kept as $LNM_ETC.pre-restore-$STAMP)"
    if [ -d "${LNM_ROOT}$LNM_ETC" ]; then run mv "${LNM_ROOT}$LNM_ETC" "${LNM_ROOT}$LNM_ETC.pre-restore-$STAMP"; fi
    run cp -R "$STAGE/etc/lnm" "${LNM_ROOT}$LNM_ETC"
    run chmod -R u=rwX,g=rX,o= "${LNM_ROOT}$LNM_ETC"
    if ! is_root_mode; then run chown -R "root:$LNM_GROUP" "${LNM_ROOT}$LNM_ETC"; fi
    if [ -f "$STAGE/etc/default/lnm" ]; then
        run cp "$STAGE/etc/default/lnm" "${LNM_ROOT}/etc/default/lnm"
    fi
fi

step "Starting the engine, then the UI"
svc start lnm-engine.service lnm-ui.service
say "Restored from $ARCHIVE. The previous journal is in $LNM_DATA/pre-restore-$STAMP."
