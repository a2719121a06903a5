#!/usr/bin/env bash
# lnm-update: install a new release next to the running one, switch to it atomically,
# and go back by itself if the new engine does not come up. Also: --rollback, --list.
#
#     sudo lnm-update /path/to/new/lnm-source      # update
#     sudo lnm-update --rollback                   # back to the previous release
#     lnm-update --list
#
# Releases live in /opt/lnm/releases/VERSION-FINGERPRINT; /opt/lnm/current and
# /opt/lnm/previous are symbolic links switched with a rename (atomic: a power cut
# leaves one or the other, never a mix). See deploy/README.md.
set -euo pipefail

PROG="lnm-update"
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: sudo lnm-update [OPTIONS] SOURCE_DIR   install SOURCE_DIR's release and switch to it
       sudo lnm-update [OPTIONS] --rollback   switch back to the previous release
       lnm-update [--root DIR] --list         list the installed releases

  --keep N         releases kept on disk, current and previous included (default 3)
  --no-snapshot    do not copy the journal to /var/lib/lnm/pre-update first
  --skip-venv      passed to the installer (tests)
  --yes            do not ask for confirmation
  --dry-run        print every step, change nothing
  --root DIR       work on an appliance tree under DIR (tests, images)
Never during a case: the engine restarts.
EOF
}

PREVIOUS_LINK="$LNM_OPT/previous"
MODE=update
SOURCE=""
KEEP=3
SNAPSHOT=1
SKIP_VENV=0
while [ $# -gt 0 ]; do
    parse_common "$@"
    if [ "$SHIFT_BY" -gt 0 ]; then
        shift "$SHIFT_BY"
        continue
    fi
    case "$1" in
        --rollback) MODE=rollback ;;
        --list) MODE=list ;;
        --keep)
            if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 2 ]; then
                die "--keep needs a number, 2 or more"
            fi
            KEEP=$2
            shift
            ;;
        --no-snapshot) SNAPSHOT=0 ;;
        --skip-venv) SKIP_VENV=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            usage >&2
            die "unknown option $1"
            ;;
        *)
            [ -z "$SOURCE" ] || die "one source directory only"
            SOURCE=$1
            ;;
    esac
    shift
done

current_release() { readlink "${LNM_ROOT}$LNM_CURRENT" 2>/dev/null || true; }
previous_release() { readlink "${LNM_ROOT}$PREVIOUS_LINK" 2>/dev/null || true; }

list_releases() {
    local cur prev d name mark
    cur=$(current_release)
    prev=$(previous_release)
    for d in "${LNM_ROOT}$LNM_RELEASES"/*/; do
        [ -d "$d" ] || continue
        name="releases/$(basename "$d")"
        mark=""
        [ "$name" != "$cur" ] || mark=" (current)"
        [ "$name" != "$prev" ] || mark=" (previous)"
        printf '%s%s\n' "$(basename "$d")" "$mark"
    done
}

# switch_to RELEASE_LINK_TARGET: point current at it (atomic rename).
switch_to() {
    ensure_link "$1" "$LNM_CURRENT"
}

# restart_and_check: restart the engine (Type=notify: systemctl returns once it is
# ready, or fails) and the UI; 0 when the engine runs afterwards.
restart_and_check() {
    svc restart lnm-engine.service || return 1
    svc is-active --quiet lnm-engine.service || return 1
    svc restart lnm-ui.service || warn "the UI did not restart (journalctl -u lnm-ui); the engine runs"
    return 0
}

snapshot_journal() {
    local data snap db rel
    data=${LNM_ROOT}$LNM_DATA
    snap="$data/pre-update"
    step "Safety copy of the journal in $LNM_DATA/pre-update (replaces the last one)"
    remove_path "$LNM_DATA/pre-update"
    run mkdir -p "$snap"
    while IFS= read -r db; do
        rel=${db#"$data"/}
        run mkdir -p "$snap/$(dirname "$rel")"
        sqlite_backup "$db" "$snap/$rel"
    done < <(sqlite_files "$data")
    if [ "$DRY_RUN" != 1 ]; then
        printf 'release=%s\ncreated_utc=%s\n' "$(current_release)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$snap/INFO"
    fi
    if ! is_root_mode; then run chown -R "$LNM_USER:$LNM_GROUP" "$snap"; fi
}

prune_releases() {
    local cur prev d name n=0
    cur=$(current_release)
    prev=$(previous_release)
    step "Keeping the $KEEP newest releases"
    # Newest first (by the time the release directory was made).
    while IFS= read -r d; do
        name="releases/$(basename "$d")"
        n=$((n + 1))
        if [ "$name" = "$cur" ] || [ "$name" = "$prev" ] || [ "$n" -le "$KEEP" ]; then
            continue
        fi
        remove_path "$LNM_RELEASES/$(basename "$d")"
    done < <(find "${LNM_ROOT}$LNM_RELEASES" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
}

do_update() {
    [ -n "$SOURCE" ] || {
        usage >&2
        die "say which source tree to install"
    }
    [ -x "$SOURCE/deploy/install.sh" ] || die "$SOURCE: no deploy/install.sh (not an LNM source tree)"
    SOURCE=$(cd "$SOURCE" && pwd)
    need_root
    local old new options=() args=()
    old=$(current_release)
    [ -n "$old" ] || die "no installed release (run deploy/install.sh first)"
    confirm UPDATE "Updating restarts the engine: monitoring stops for a few seconds. Never during a case."
    [ "$SNAPSHOT" = 0 ] || snapshot_journal
    if [ -f "${LNM_ROOT}$LNM_OPT/install-options" ]; then
        read -r -a options <"${LNM_ROOT}$LNM_OPT/install-options"
    fi
    args=(--source "$SOURCE" --no-start "${options[@]}")
    [ -z "$LNM_ROOT" ] || args+=(--destdir "$LNM_ROOT")
    [ "$SKIP_VENV" = 0 ] || args+=(--skip-venv)
    [ "$DRY_RUN" = 0 ] || args+=(--dry-run)
    step "Installing the new release (the running one stays untouched)"
    note "run: $(cmdline "$SOURCE/deploy/install.sh" "${args[@]}")"
    if ! "$SOURCE/deploy/install.sh" "${args[@]}"; then
        if [ "$(current_release)" != "$old" ]; then
            switch_to "$old"
        fi
        die "the new release did not install (see above); still running $old"
    fi
    if [ "$DRY_RUN" = 1 ]; then
        note "would restart the engine and the UI, check the engine, and roll back to $old if it fails"
        return 0
    fi
    new=$(current_release)
    if [ "$new" = "$old" ]; then
        say "Already running this release ($new); nothing to switch."
        return 0
    fi
    ensure_link "$old" "$PREVIOUS_LINK"
    step "Restarting on $new"
    if ! restart_and_check; then
        warn "the engine did not come up on $new: rolling back to $old"
        switch_to "$old"
        ensure_link "$new" "$PREVIOUS_LINK"
        restart_and_check || die "the engine does not come up on $old either: see journalctl -u lnm-engine"
        die "update failed; rolled back to $old (the failed release stays as previous)"
    fi
    prune_releases
    say "Updated: now running $new (previous: $old; lnm-update --rollback goes back)."
}

do_rollback() {
    need_root
    local cur prev
    cur=$(current_release)
    prev=$(previous_release)
    if [ -z "$prev" ] || [ ! -d "${LNM_ROOT}$LNM_OPT/$prev" ]; then
        die "no previous release to go back to"
    fi
    confirm ROLLBACK "Going back to $prev restarts the engine: monitoring stops for a few seconds. Never during a case."
    step "Checking the settings with $prev"
    if [ -x "${LNM_ROOT}$LNM_OPT/$prev/bin/lnm" ]; then
        run "${LNM_ROOT}$LNM_OPT/$prev/bin/lnm" config-check "${LNM_ROOT}$LNM_ETC" ||
            die "the settings in $LNM_ETC do not validate with $prev; nothing was switched"
    fi
    step "Switching to $prev"
    switch_to "$prev"
    ensure_link "$cur" "$PREVIOUS_LINK"
    if [ "$DRY_RUN" = 1 ]; then
        note "would restart the engine and the UI"
        return 0
    fi
    restart_and_check || die "the engine does not come up on $prev: see journalctl -u lnm-engine (lnm-update --rollback returns to $cur)"
    say "Rolled back: now running $prev (lnm-update --rollback returns to $cur)."
}

case "$MODE" in
    list) list_releases ;;
    rollback) do_rollback ;;
    update) do_update ;;
esac
