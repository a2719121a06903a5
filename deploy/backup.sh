#!/usr/bin/env bash
# lnm-backup: copy the case journal and the settings into a verified backup archive.
#
#     sudo lnm-backup /media/usb-stick
#
# Safe while the engine runs (SQLite's online backup API gives a consistent copy of a
# journal being written). Every case in the copy is checked with "lnm verify" (its hash
# chain) before the archive is declared good. See deploy/README.md.
set -euo pipefail

PROG="lnm-backup"
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: sudo lnm-backup [--dry-run] [--root DIR] [--no-config] DEST_DIR

Write DEST_DIR/lnm-backup-HOST-UTC.tar.gz with every case journal of /var/lib/lnm
(consistent copies, each case verified with "lnm verify"), the settings in /etc/lnm and
/etc/default/lnm, SHA256SUMS and BACKUP-INFO.

  --no-config   leave the settings out
  --dry-run     print every step, change nothing
  --root DIR    work on an appliance tree under DIR (tests, images)
Exit status: 0 written and verified; 1 not written, or written but a case failed
verification (the message says which).
EOF
}

DEST=""
WITH_CONFIG=1
while [ $# -gt 0 ]; do
    parse_common "$@"
    if [ "$SHIFT_BY" -gt 0 ]; then
        shift "$SHIFT_BY"
        continue
    fi
    case "$1" in
        --no-config) WITH_CONFIG=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            usage >&2
            die "unknown option $1"
            ;;
        *)
            [ -z "$DEST" ] || die "one destination directory only"
            DEST=$1
            ;;
    esac
    shift
done
[ -n "$DEST" ] || {
    usage >&2
    die "say where to write the backup (a mounted USB stick or network share)"
}
[ -d "$DEST" ] || die "$DEST: no such directory (is the stick mounted?)"
DEST=$(cd "$DEST" && pwd)
need_root

DATA=${LNM_ROOT}$LNM_DATA
mapfile -t JOURNALS < <(sqlite_files "$DATA")
[ "${#JOURNALS[@]}" -gt 0 ] || die "no case journal under $DATA: nothing to back up"

NAME="lnm-backup-$(hostname -s 2>/dev/null || echo lnm)-$(utc_stamp).tar.gz"
step "Backing up ${#JOURNALS[@]} journal file(s) from $DATA to $DEST/$NAME"

if [ "$DRY_RUN" = 1 ]; then
    STAGE="$DEST/.lnm-backup.XXXXXX"
else
    STAGE=$(mktemp -d "$DEST/.lnm-backup.XXXXXX")
    trap 'rm -rf "$STAGE" "$DEST/$NAME.partial"' EXIT
fi

step "Consistent copies of the journals"
for db in "${JOURNALS[@]}"; do
    rel=${db#"$DATA"/}
    run mkdir -p "$STAGE/data/$(dirname "$rel")"
    sqlite_backup "$db" "$STAGE/data/$rel"
done

if [ "$WITH_CONFIG" = 1 ]; then
    step "Settings"
    if [ -d "${LNM_ROOT}$LNM_ETC" ]; then
        run mkdir -p "$STAGE/etc"
        run cp -R "${LNM_ROOT}$LNM_ETC" "$STAGE/etc/lnm"
    fi
    if [ -f "${LNM_ROOT}/etc/default/lnm" ]; then
        run mkdir -p "$STAGE/etc/default"
        run cp "${LNM_ROOT}/etc/default/lnm" "$STAGE/etc/default/lnm"
    fi
fi

step "Verifying every case in the copies (lnm verify)"
VERIFIED=1
for db in "${JOURNALS[@]}"; do
    rel=${db#"$DATA"/}
    verify_journal "$STAGE/data/$rel" || VERIFIED=0
done

step "Checksums and archive"
if [ "$DRY_RUN" = 1 ]; then
    note "would write SHA256SUMS, BACKUP-INFO and $DEST/$NAME"
    exit 0
fi
# Only the databases themselves: a reader's -shm/-wal left by verification is not data.
find "$STAGE/data" \( -name '*-shm' -o -name '*-wal' \) -delete
{
    echo "lnm backup"
    echo "created_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host=$(hostname 2>/dev/null || echo unknown)"
    echo "release=$(readlink "${LNM_ROOT}$LNM_CURRENT" 2>/dev/null || echo unknown)"
    echo "source=$LNM_DATA"
    echo "verified=$([ "$VERIFIED" = 1 ] && echo yes || echo NO)"
} >"$STAGE/BACKUP-INFO"
(cd "$STAGE" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum) >"$STAGE/SHA256SUMS"
tar -C "$STAGE" -czf "$DEST/$NAME.partial" .
sync -f "$DEST/$NAME.partial" 2>/dev/null || sync
mv -f "$DEST/$NAME.partial" "$DEST/$NAME"
sync -f "$DEST/$NAME" 2>/dev/null || sync
if [ "$VERIFIED" = 1 ]; then
    say "Backup written and verified: $DEST/$NAME"
else
    say "Backup written to $DEST/$NAME, but a case FAILED verification (see above): the journal may have been altered; keep this backup and report it." >&2
    exit 1
fi
