# shellcheck shell=bash disable=SC2034
# Shared helpers for the LNM deployment scripts (install, update, backup, restore,
# factory reset). Sourced, never executed.
#
# Every change to the system goes through these helpers so that each script can
#   - print every step it takes,
#   - only print them (--dry-run),
#   - work under a destination directory instead of / (--destdir / --root DIR), and
#   - change nothing when the system is already as wanted (idempotent).
#
# Conventions: paths given to the helpers are absolute paths on the appliance
# (/etc/lnm, /var/lib/lnm, ...); the helpers map them under $LNM_ROOT themselves.

# ---- the appliance's fixed layout -------------------------------------------------
LNM_USER=lnm
LNM_GROUP=lnm
LNM_GROUPS="dialout gpio audio video input render"
LNM_OPT=/opt/lnm
LNM_RELEASES=/opt/lnm/releases
LNM_CURRENT=/opt/lnm/current
LNM_ETC=/etc/lnm
LNM_DATA=/var/lib/lnm
LNM_SOCKET=/run/lnm/engine.sock
LNM_MANIFEST=/opt/lnm/install-manifest
LNM_UNITS="lnm-engine.service lnm-ui.service"

# ---- state set by the calling script -----------------------------------------------
LNM_ROOT="${LNM_ROOT:-}"    # "" = the real system; otherwise a destination directory
DRY_RUN="${DRY_RUN:-0}"     # 1 = print every step, change nothing
CHANGES=0                   # number of changes made (or that a dry run would make)
PROG="${PROG:-lnm-deploy}"

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# Path of an appliance path under the destination root.
p() { printf '%s%s' "$LNM_ROOT" "$1"; }

# Quote a command line for printing.
cmdline() {
    local out="" arg
    for arg in "$@"; do
        case "$arg" in
            *[!A-Za-z0-9_./:=@%+,-]* | "") out="$out '${arg//\'/\'\\\'\'}'" ;;
            *) out="$out $arg" ;;
        esac
    done
    printf '%s' "${out# }"
}

changed() { CHANGES=$((CHANGES + 1)); }

# run CMD...: print it; run it unless this is a dry run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        note "would run: $(cmdline "$@")"
        return 0
    fi
    note "run: $(cmdline "$@")"
    "$@"
}

# host_only CMD...: a command that acts on the running system (apt, useradd,
# systemctl, udevadm). Under a destination directory it is reported, not run.
host_only() {
    if [ -n "$LNM_ROOT" ]; then
        note "skipped under $LNM_ROOT: $(cmdline "$@")"
        return 0
    fi
    run "$@"
}

# svc ARGS...: systemctl, or $LNM_SYSTEMCTL when set (a recorder in tests).
svc() {
    if [ -n "${LNM_SYSTEMCTL:-}" ]; then
        run "$LNM_SYSTEMCTL" "$@"
    else
        host_only systemctl "$@"
    fi
}

is_root_mode() { [ -n "$LNM_ROOT" ]; }

# ---- files, directories, links ----------------------------------------------------
# Ownership is applied on the real system only; under a destination directory the
# wanted owner is recorded in the install manifest instead (the user does not exist
# on the machine building the tree).

# _fix_meta PATH MODE OWNER: set mode and (real system only) owner when they differ.
_fix_meta() {
    local path="$1" mode="$2" owner="$3" target meta
    target="$LNM_ROOT$path"
    if [ "$DRY_RUN" = 1 ] && [ ! -e "$target" ]; then
        return 0
    fi
    meta=$(stat -c '%a %U:%G' "$target" 2>/dev/null) || meta=""
    if [ "${meta%% *}" != "${mode#0}" ]; then
        run chmod "$mode" "$target"
        changed
    fi
    if ! is_root_mode && [ "${meta#* }" != "$owner" ]; then
        run chown "$owner" "$target"
        changed
    fi
}

# ensure_dir PATH MODE OWNER
ensure_dir() {
    local path="$1" mode="$2" owner="$3" target
    target=${LNM_ROOT}$path
    if [ ! -d "$target" ]; then
        run mkdir -p "$target"
        changed
    fi
    _fix_meta "$path" "$mode" "$owner"
    manifest_add "dir $mode $owner $path"
}

# install_file SRC DEST MODE OWNER: a file the product manages (replaced when it differs).
install_file() {
    local src="$1" dest="$2" mode="$3" owner="$4" target
    target=${LNM_ROOT}$dest
    [ -f "$src" ] || die "missing source file $src"
    if [ -f "$target" ] && cmp -s "$src" "$target"; then
        :
    else
        if [ -e "$target" ]; then
            note "update $dest"
        else
            note "new $dest"
        fi
        if [ "$DRY_RUN" = 1 ]; then
            note "would install ${_FROM:-$src} -> $target"
        else
            _place "$src" "$target" "$mode"
        fi
        changed
    fi
    _fix_meta "$dest" "$mode" "$owner"
    manifest_add "file $mode $owner $dest"
}

# _place SRC TARGET MODE: copy atomically (a power cut leaves the old or the new file).
_place() {
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.lnm-new"
    chmod "$3" "$2.lnm-new"
    mv -f "$2.lnm-new" "$2"
}

# install_text DEST MODE OWNER < CONTENT: like install_file, content from stdin.
install_text() {
    local tmp rc=0
    tmp=$(mktemp "${TMPDIR:-/tmp}/lnm-deploy.XXXXXX")
    cat >"$tmp"
    _FROM="(generated)" install_file "$tmp" "$@" || rc=$?
    rm -f "$tmp"
    return "$rc"
}

# install_if_absent SRC DEST MODE OWNER: configuration the hospital owns. Copied only
# when absent; an existing file is never overwritten.
install_if_absent() {
    local src="$1" dest="$2" mode="$3" owner="$4" target
    target=${LNM_ROOT}$dest
    if [ -e "$target" ]; then
        if ! cmp -s "$src" "$target"; then
            note "kept $dest (local settings; differs from the shipped $(basename "$src"))"
        fi
    else
        note "new $dest"
        if [ "$DRY_RUN" = 1 ]; then
            note "would copy $src -> $target"
        else
            _place "$src" "$target" "$mode"
        fi
        changed
    fi
    _fix_meta "$dest" "$mode" "$owner"
    manifest_add "conf $mode $owner $dest"
}

# ensure_link TARGET LINK: a symbolic link, replaced atomically (rename) when it differs.
ensure_link() {
    local to="$1" link="$2" target
    target=${LNM_ROOT}$link
    if [ -L "$target" ] && [ "$(readlink "$target")" = "$to" ]; then
        :
    else
        note "link $link -> $to"
        if [ "$DRY_RUN" = 1 ]; then
            note "would link $target -> $to"
        else
            mkdir -p "$(dirname "$target")"
            ln -sfn "$to" "$target.lnm-new"
            mv -Tf "$target.lnm-new" "$target"
        fi
        changed
    fi
    manifest_add "link - - $link -> $to"
}

# remove_path PATH: remove a file, link or (recursively) a directory if present.
remove_path() {
    local target
    target="$LNM_ROOT$1"
    if [ -e "$target" ] || [ -L "$target" ]; then
        if [ -d "$target" ] && [ ! -L "$target" ]; then
            run rm -rf "$target"
        else
            run rm -f "$target"
        fi
        changed
    fi
}

# remove_empty_dir PATH: remove a directory only when it is empty.
remove_empty_dir() {
    local target
    target="$LNM_ROOT$1"
    if [ -d "$target" ] && [ -z "$(ls -A "$target")" ]; then
        run rmdir "$target"
        changed
    fi
}

# ---- marked blocks in files the product shares with others (config.txt) ------------
BLOCK_BEGIN="# >>> LNM appliance (managed by deploy/install.sh) >>>"
BLOCK_END="# <<< LNM appliance <<<"

# _strip_block FILE: print FILE without the LNM block.
_strip_block() {
    awk -v b="$BLOCK_BEGIN" -v e="$BLOCK_END" '
        $0 == b { skip = 1; next }
        $0 == e { skip = 0; next }
        !skip { print }' "$1"
}

# ensure_block FILE < BLOCK: FILE (existing) ends with exactly this LNM block.
# Feed it with a redirection, not a pipe (a pipe would run it in a subshell and lose
# the manifest entry and the change count); the same holds for install_text.
ensure_block() {
    local file="$1" target tmp body
    target=${LNM_ROOT}$file
    body=$(cat)
    tmp=$(mktemp "${TMPDIR:-/tmp}/lnm-deploy.XXXXXX")
    {
        _strip_block "$target"
        printf '%s\n%s\n%s\n' "$BLOCK_BEGIN" "$body" "$BLOCK_END"
    } >"$tmp"
    if cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
    else
        note "update the LNM block in $file"
        if [ "$DRY_RUN" = 1 ]; then
            note "would write: $(printf '%s' "$body" | tr '\n' ';')"
            rm -f "$tmp"
        else
            cp -p "$target" "$target.lnm-new"
            cat "$tmp" >"$target.lnm-new"
            rm -f "$tmp"
            mv -f "$target.lnm-new" "$target"
        fi
        changed
    fi
    manifest_add "block - - $file"
}

# remove_block FILE: take the LNM block out of FILE, leaving the rest untouched.
remove_block() {
    local file="$1" target tmp
    target=${LNM_ROOT}$file
    [ -f "$target" ] || return 0
    grep -qxF "$BLOCK_BEGIN" "$target" || return 0
    note "remove the LNM block from $file"
    if [ "$DRY_RUN" = 1 ]; then
        changed
        return 0
    fi
    tmp="$target.lnm-new"
    cp -p "$target" "$tmp"
    _strip_block "$target" >"$tmp"
    mv -f "$tmp" "$target"
    changed
}

# ---- install manifest --------------------------------------------------------------
# One line per thing laid down: KIND MODE OWNER PATH. Uninstall reads it back.
MANIFEST_LINES=()
manifest_add() { MANIFEST_LINES+=("$1"); }

write_manifest() {
    install_text "$LNM_MANIFEST" 0644 root:root < <(
        say "# LNM install manifest: what deploy/install.sh laid down (uninstall reads it)."
        say "# kind mode owner path"
        printf '%s\n' "${MANIFEST_LINES[@]}"
    )
}

# ---- miscellany --------------------------------------------------------------------
need_root() {
    if ! is_root_mode && [ "$DRY_RUN" != 1 ] && [ "$(id -u)" -ne 0 ]; then
        die "run as root (sudo $0 ...), or use --dry-run to see the steps"
    fi
}

# confirm WORD PROMPT: ask the operator to type WORD; ASSUME_YES=1 skips the question.
confirm() {
    local word="$1" prompt="$2" answer
    if [ "${ASSUME_YES:-0}" = 1 ]; then
        return 0
    fi
    if [ ! -t 0 ]; then
        die "$prompt: not confirmed (no terminal); add --yes to confirm"
    fi
    printf '%s\nType %s to confirm: ' "$prompt" "$word" >&2
    read -r answer || answer=""
    [ "$answer" = "$word" ] || die "not confirmed; nothing was changed by this step"
}

# lnm_cmd: the lnm command of the current release (or $LNM_BIN when set).
lnm_cmd() {
    if [ -n "${LNM_BIN:-}" ]; then
        printf '%s' "$LNM_BIN"
    else
        p "$LNM_CURRENT/bin/lnm"
    fi
}

# The live journal and any other SQLite databases under a data directory (found by
# their file header), leaving out the copies the maintenance scripts keep there
# (pre-restore-*, pre-update, unfinished .lnm-* work directories).
sqlite_files() {
    local dir="$1" f
    [ -d "$dir" ] || return 0
    while IFS= read -r -d '' f; do
        if [ "$(head -c 15 "$f" 2>/dev/null)" = "SQLite format 3" ]; then
            printf '%s\n' "$f"
        fi
    done < <(find "$dir" \( -path "$dir/pre-restore-*" -o -path "$dir/pre-update" -o -path "$dir/.lnm-*" \) -prune \
        -o -type f ! -name '*-wal' ! -name '*-shm' ! -name '*-journal' -print0 | sort -z)
}

utc_stamp() { date -u +%Y%m%dT%H%M%SZ; }

# sqlite_backup SRC DEST: a consistent copy of a live SQLite database (the online backup
# API: safe while the engine writes). sqlite3's .backup, or Python's when the sqlite3
# program is missing.
sqlite_backup() {
    local src="$1" dest="$2"
    if command -v sqlite3 >/dev/null 2>&1; then
        run sqlite3 -bail "$src" ".timeout 10000" ".backup '$dest'"
    else
        run python3 -c 'import sqlite3, sys
src = sqlite3.connect(sys.argv[1], timeout=10)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
src.close()' "$src" "$dest"
    fi
    # Opening the live journal may have created its -wal/-shm files as root; the engine
    # must keep being able to open them.
    if ! is_root_mode && [ "$DRY_RUN" != 1 ]; then
        local f
        for f in "$src-wal" "$src-shm"; do
            if [ -e "$f" ]; then chown "$LNM_USER:$LNM_GROUP" "$f"; fi
        done
    fi
}

# verify_journal FILE: every case in a journal file passes "lnm verify" (hash chain).
# Prints one line per case; returns 1 when any case fails or the file cannot be read.
verify_journal() {
    local file="$1" lnm out ids id bad=0 n=0
    lnm=$(lnm_cmd)
    if [ "$DRY_RUN" = 1 ]; then
        note "would run: $lnm verify CASE --journal $file (every case)"
        return 0
    fi
    if ! out=$("$lnm" cases --journal "$file" 2>&1); then
        printf '    %s: cannot list the cases: %s\n' "$file" "$out" >&2
        return 1
    fi
    # "lnm cases" prints a header line then one case per line, its id first.
    ids=$(printf '%s\n' "$out" | awk 'NR > 1 && $1 != "" { print $1 }')
    case "$out" in "no cases"*) ids="" ;; esac
    for id in $ids; do
        n=$((n + 1))
        if out=$("$lnm" verify "$id" --journal "$file" 2>&1); then
            note "verified $id: $out"
        else
            printf '    FAILED %s: %s\n' "$id" "$out" >&2
            bad=1
        fi
    done
    note "$(basename "$file"): $n case(s) checked"
    return "$bad"
}

# Common options of the maintenance scripts: --root DIR (alias --destdir), --dry-run,
# --yes. parse_common ARG... sets SHIFT_BY to the number of arguments consumed (0 when
# the first argument is not a common option).
SHIFT_BY=0
parse_common() {
    SHIFT_BY=0
    case "${1:-}" in
        --root | --destdir)
            [ $# -ge 2 ] || die "$1 needs a directory"
            LNM_ROOT=$(cd "$2" && pwd) || die "$2: no such directory"
            [ "$LNM_ROOT" != / ] || LNM_ROOT=""
            SHIFT_BY=2
            ;;
        --dry-run)
            DRY_RUN=1
            SHIFT_BY=1
            ;;
        --yes | -y)
            ASSUME_YES=1
            SHIFT_BY=1
            ;;
    esac
}
