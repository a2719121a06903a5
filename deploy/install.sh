#!/usr/bin/env bash
# Turn a fresh Raspberry Pi OS (Bookworm, 64-bit) into the LNM appliance, or take it
# off again. Run from the unpacked source tree:
#
#     sudo ./deploy/install.sh
#
# Idempotent: a second run changes nothing (and restarts nothing) when the system is
# already as wanted. See deploy/README.md for what it does and why.
set -euo pipefail

PROG="lnm-install"
HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: sudo deploy/install.sh [OPTIONS]

Install (or update in place) the LNM appliance on this Raspberry Pi.

  --dry-run            print every step, change nothing
  --destdir DIR        lay everything down under DIR instead of / (no packages, no
                       users or services on this machine; users go to DIR/etc/passwd)
  --skip-venv          do not build the Python environment (tests; the dry run still
                       shows the step)
  --no-start           install and enable the services but do not (re)start them
  --source DIR         LNM source tree (default: the tree this script is in)
  --python PY          Python 3.11+ interpreter for the environment (default: python3)
  --pi-model TEXT      board model instead of reading /proc/device-tree/model
  --gpio-lib LIB       auto (default: rpi-lgpio on a Pi 5, RPi.GPIO before),
                       rpi-gpio, rpi-lgpio or none
  --audio OUT          max98357a (default, I2S amplifier), hifiberry-dac, usb,
                       headphones (Pi 4 jack) or none (leave audio alone)
  --audio-card NAME    ALSA card name for --audio usb (default: detected)
  --board-usb VID:PID  the board's USB id (default 1209:0001, a placeholder)
  --uninstall          remove the program, services and rules; keep the cases
                       (/var/lib/lnm), the settings (/etc/lnm) and the lnm user
  --purge              with --uninstall: also delete cases, settings and the user
                       (asks for confirmation unless --yes)
  --yes                confirm --purge without asking
  -h, --help           this help
EOF
}

SOURCE=$(cd "$HERE/.." && pwd)
PYTHON=python3
SKIP_VENV=0
NO_START=0
PI_MODEL=""
GPIO_LIB=auto
AUDIO=max98357a
AUDIO_CARD=""
BOARD_USB="1209:0001"
UNINSTALL=0
PURGE=0
ASSUME_YES=0

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --destdir)
            [ $# -ge 2 ] || die "--destdir needs a directory"
            LNM_ROOT=$2
            shift
            ;;
        --skip-venv) SKIP_VENV=1 ;;
        --no-start) NO_START=1 ;;
        --source)
            [ $# -ge 2 ] || die "--source needs a directory"
            SOURCE=$(cd "$2" && pwd)
            shift
            ;;
        --python)
            [ $# -ge 2 ] || die "--python needs an interpreter"
            PYTHON=$2
            shift
            ;;
        --pi-model)
            [ $# -ge 2 ] || die "--pi-model needs a model text"
            PI_MODEL=$2
            shift
            ;;
        --gpio-lib)
            [ $# -ge 2 ] || die "--gpio-lib needs auto, rpi-gpio, rpi-lgpio or none"
            GPIO_LIB=$2
            shift
            ;;
        --audio)
            [ $# -ge 2 ] || die "--audio needs max98357a, hifiberry-dac, usb, headphones or none"
            AUDIO=$2
            shift
            ;;
        --audio-card)
            [ $# -ge 2 ] || die "--audio-card needs an ALSA card name"
            AUDIO_CARD=$2
            shift
            ;;
        --board-usb)
            [ $# -ge 2 ] || die "--board-usb needs VID:PID (hexadecimal, e.g. 1209:0001)"
            BOARD_USB=$2
            shift
            ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --yes | -y) ASSUME_YES=1 ;;
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

GPIO_LIB_OPTION=$GPIO_LIB
case "$GPIO_LIB" in auto | rpi-gpio | rpi-lgpio | none) ;; *) die "--gpio-lib $GPIO_LIB: use auto, rpi-gpio, rpi-lgpio or none" ;; esac
case "$AUDIO" in max98357a | hifiberry-dac | usb | headphones | none) ;; *) die "--audio $AUDIO: use max98357a, hifiberry-dac, usb, headphones or none" ;; esac
[[ "$BOARD_USB" =~ ^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$ ]] || die "--board-usb $BOARD_USB: use VID:PID, four hexadecimal digits each (e.g. 1209:0001)"
BOARD_USB=$(printf '%s' "$BOARD_USB" | tr 'A-F' 'a-f')
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"
if [ -n "$LNM_ROOT" ]; then
    if [ "$DRY_RUN" != 1 ]; then
        mkdir -p "$LNM_ROOT" || die "cannot create $LNM_ROOT"
    fi
    [ ! -d "$LNM_ROOT" ] || LNM_ROOT=$(cd "$LNM_ROOT" && pwd)
    [ "$LNM_ROOT" != / ] || LNM_ROOT=""
fi

# Packages from the Debian/Raspberry Pi OS archive. Kivy's wheel brings its own SDL2
# (with the KMS/DRM video driver); SDL2 loads the GPU libraries below at run time.
APT_PACKAGES="python3 python3-venv ca-certificates sqlite3 alsa-utils libasound2
libdrm2 libgbm1 libegl1 libgles2 libgl1-mesa-dri libudev1 libmtdev1 usbutils logrotate
poppler-utils"  # pdftoppm: the report preview on the end-of-case screen
APT_BUILD_RPI_GPIO="gcc python3-dev"    # RPi.GPIO is built from source on the Pi

# ---------------------------------------------------------------------------------------
release_version() {
    sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$SOURCE/pyproject.toml" | head -n 1
}

# A fingerprint of everything that goes into a release: a changed source tree makes a
# new release directory, an unchanged one is recognised and left alone.
source_fingerprint() {
    (
        cd "$SOURCE"
        find app firmware_bridge config deploy pyproject.toml requirements.txt README.md \
            -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 2>/dev/null |
            sort -z | xargs -0 sha256sum | sha256sum | cut -c1-10
    )
}

read_model() {
    if [ -n "$PI_MODEL" ]; then
        printf '%s' "$PI_MODEL"
    elif [ -r /proc/device-tree/model ]; then
        tr -d '\0' </proc/device-tree/model
    fi
}

# Board family from the model text: pi5, pi4, pi-older or none.
board_family() {
    case "$1" in
        *"Raspberry Pi 5"* | *"Raspberry Pi Compute Module 5"*) echo pi5 ;;
        *"Raspberry Pi 4"* | *"Raspberry Pi Compute Module 4"*) echo pi4 ;;
        *"Raspberry Pi"*) echo pi-older ;;
        *) echo none ;;
    esac
}

config_txt() {
    local f
    for f in /boot/firmware/config.txt /boot/config.txt; do
        if [ -f "${LNM_ROOT}$f" ]; then
            printf '%s' "$f"
            return 0
        fi
    done
    return 1
}

# ---------------------------------------------------------------------------------------
step_preflight() {
    step "Checking the system"
    need_root
    if [ ! -f "$SOURCE/pyproject.toml" ] || [ ! -d "$SOURCE/app" ] || [ ! -d "$SOURCE/config" ]; then
        die "$SOURCE is not an LNM source tree (pyproject.toml, app/ and config/ expected)"
    fi
    if command -v "$PYTHON" >/dev/null 2>&1; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            die "$PYTHON is older than Python 3.11"
    elif [ -n "$LNM_ROOT" ]; then
        die "$PYTHON not found (give --python)"
    fi
    if [ -z "$LNM_ROOT" ] && [ -r /etc/os-release ]; then
        local codename pretty
        # shellcheck disable=SC1091
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        # shellcheck disable=SC1091
        pretty=$(. /etc/os-release && echo "${PRETTY_NAME:-unknown}")
        [ "$codename" = bookworm ] || warn "made for Raspberry Pi OS Bookworm; this is $pretty"
        [ "$(uname -m)" = aarch64 ] || warn "made for the 64-bit OS (aarch64); this is $(uname -m)"
    fi
    VERSION=$(release_version)
    [ -n "$VERSION" ] || die "no version in $SOURCE/pyproject.toml"
    RELEASE_ID="$VERSION-$(source_fingerprint)"
    RELEASE="$LNM_RELEASES/$RELEASE_ID"
    MODEL=$(read_model)
    FAMILY=$(board_family "$MODEL")
    note "source: $SOURCE (release $RELEASE_ID)"
    note "target: ${LNM_ROOT:-/ (this system)}"
    note "board: ${MODEL:-unknown} ($FAMILY)"
    if [ "$GPIO_LIB" = auto ]; then
        case "$FAMILY" in
            pi5) GPIO_LIB=rpi-lgpio ;;
            pi4 | pi-older) GPIO_LIB=rpi-gpio ;;
            *) GPIO_LIB=none ;;
        esac
    fi
    [ "$FAMILY" != pi-older ] || warn "only the Raspberry Pi 4 and 5 are supported boards"
    if [ "$GPIO_LIB" = none ]; then
        warn "not a Raspberry Pi: no GPIO library; the engine refuses to start with LNM_GPIO=rpi (set LNM_GPIO=sim in /etc/default/lnm for a demonstration station only)"
    fi
    note "GPIO library: $GPIO_LIB; audio: $AUDIO; board USB id: $BOARD_USB"
}

step_packages() {
    step "System packages"
    local wanted missing="" pkg
    wanted=$APT_PACKAGES
    [ "$GPIO_LIB" != rpi-gpio ] || wanted="$wanted $APT_BUILD_RPI_GPIO"
    wanted=$(printf '%s\n' "$wanted" | xargs)
    if [ -n "$LNM_ROOT" ]; then
        # shellcheck disable=SC2086
        host_only apt-get install -y --no-install-recommends $wanted
        return 0
    fi
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    if [ -z "$missing" ]; then
        note "all present: $wanted"
        return 0
    fi
    run apt-get update
    # shellcheck disable=SC2086
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    changed
}

# ---- user and groups ----------------------------------------------------------------
# Under a destination directory the user is recorded in DIR/etc/passwd and
# DIR/etc/group (same format as the real files); on the system, useradd/usermod.

_free_id() { # FILE: the highest free system id (999 downwards) in a passwd/group file
    local file="$1" id=999
    while [ "$id" -gt 100 ] && cut -d: -f3 "$file" | grep -qx "$id"; do
        id=$((id - 1))
    done
    echo "$id"
}

_root_group() { # NAME [MEMBER]: ensure group (and membership) in DIR/etc/group
    local name="$1" member="${2:-}" file gid members
    file=${LNM_ROOT}/etc/group
    [ -f "$file" ] || file=/dev/null # a dry run into an empty root
    if ! grep -q "^$name:" "$file"; then
        case "$name" in # Debian's static ids where they exist
            dialout) gid=20 ;;
            audio) gid=29 ;;
            video) gid=44 ;;
            *) gid="" ;;
        esac
        if [ -z "$gid" ] || cut -d: -f3 "$file" | grep -qx "$gid"; then
            gid=$(_free_id "$file")
        fi
        note "group $name (gid $gid) in ${LNM_ROOT}/etc/group${member:+ with member $member}"
        [ "$DRY_RUN" = 1 ] || printf '%s:x:%s:%s\n' "$name" "$gid" "$member" >>"$file"
        changed
        return 0
    fi
    [ -n "$member" ] || return 0
    members=$(grep "^$name:" "$file" | cut -d: -f4)
    case ",$members," in *",$member,"*) return 0 ;; esac
    note "add $member to group $name in $file"
    if [ "$DRY_RUN" != 1 ]; then
        sed -i "s/^\\($name:[^:]*:[^:]*:\\)\\(.*\\)\$/\\1\\2${members:+,}$member/" "$file"
    fi
    changed
}

step_user() {
    step "Service user $LNM_USER (groups: $LNM_GROUPS)"
    local g
    if [ -n "$LNM_ROOT" ]; then
        local passwd group uid gid
        passwd=${LNM_ROOT}/etc/passwd
        group=${LNM_ROOT}/etc/group
        if [ "$DRY_RUN" != 1 ]; then
            mkdir -p "${LNM_ROOT}/etc"
            [ -e "$passwd" ] || : >"$passwd"
            [ -e "$group" ] || : >"$group"
        fi
        _root_group "$LNM_GROUP"
        for g in $LNM_GROUPS; do
            _root_group "$g" "$LNM_USER"
        done
        if [ -f "$passwd" ] && grep -q "^$LNM_USER:" "$passwd"; then
            :
        else
            gid=$( { grep "^$LNM_GROUP:" "$group" 2>/dev/null || echo "x:x:999"; } | cut -d: -f3)
            uid=$(if [ -f "$passwd" ]; then _free_id "$passwd"; else echo 999; fi)
            note "user $LNM_USER (uid $uid) in $passwd"
            [ "$DRY_RUN" = 1 ] || printf '%s:x:%s:%s:LNM nerve monitor:%s:/usr/sbin/nologin\n' \
                "$LNM_USER" "$uid" "$gid" "$LNM_DATA" >>"$passwd"
            changed
        fi
        manifest_add "user - - $LNM_USER"
        return 0
    fi
    getent group "$LNM_GROUP" >/dev/null || { run groupadd --system "$LNM_GROUP" && changed; }
    for g in $LNM_GROUPS; do
        getent group "$g" >/dev/null || { run groupadd --system "$g" && changed; }
    done
    if ! getent passwd "$LNM_USER" >/dev/null; then
        run useradd --system --gid "$LNM_GROUP" --groups "$(echo "$LNM_GROUPS" | tr ' ' ,)" \
            --home-dir "$LNM_DATA" --no-create-home --shell /usr/sbin/nologin \
            --comment "LNM nerve monitor" "$LNM_USER"
        changed
    else
        for g in $LNM_GROUPS; do
            if ! id -nG "$LNM_USER" | tr ' ' '\n' | grep -qx "$g"; then
                run usermod -a -G "$g" "$LNM_USER"
                changed
            fi
        done
    fi
    manifest_add "user - - $LNM_USER"
}

# ---- directories ------------------------------------------------------------------------
step_dirs() {
    step "Directories"
    ensure_dir "$LNM_OPT" 0755 root:root
    ensure_dir "$LNM_RELEASES" 0755 root:root
    ensure_dir "$LNM_ETC" 0750 "root:$LNM_GROUP"
    ensure_dir "$LNM_ETC/profiles" 0750 "root:$LNM_GROUP"
    ensure_dir "$LNM_DATA" 0750 "$LNM_USER:$LNM_GROUP"
    ensure_dir "$LNM_DATA/reports" 0750 "$LNM_USER:$LNM_GROUP"
    ensure_dir "$LNM_DATA/log" 0750 "$LNM_USER:$LNM_GROUP"
    ensure_dir "$LNM_DATA/ui" 0750 "$LNM_USER:$LNM_GROUP"
}

# ---- the release: a versioned virtual environment ----------------------------------------
step_release() {
    step "Application release $RELEASE_ID in $RELEASE"
    local rel stamp pkgs
    rel=${LNM_ROOT}$RELEASE
    stamp="$rel/.lnm-release"
    case "$GPIO_LIB" in
        rpi-gpio) pkgs=("${SOURCE}[pi]") ;;
        rpi-lgpio) pkgs=("$SOURCE" "rpi-lgpio==0.6" "lgpio==0.2.2.0") ;;
        *) pkgs=("$SOURCE") ;;
    esac
    if [ -f "$stamp" ] && grep -qx "gpio=$GPIO_LIB" "$stamp" &&
        { [ "$SKIP_VENV" = 1 ] || ! grep -qx "venv=skipped" "$stamp"; }; then
        note "already installed (venv: $(sed -n 's/^venv=//p' "$stamp"))"
        manifest_add "dir 0755 root:root $RELEASE"
        return 0
    fi
    if [ -e "$rel" ]; then
        note "an unfinished or different build of $RELEASE_ID is there; rebuilding it"
        run rm -rf "$rel"
    fi
    changed
    if [ "$SKIP_VENV" = 1 ]; then
        note "skipped (--skip-venv): $PYTHON -m venv $rel"
        note "skipped (--skip-venv): $rel/bin/python -m pip install -c $SOURCE/requirements.txt ${pkgs[*]}"
        run mkdir -p "$rel"
    else
        run "$PYTHON" -m venv "$rel"
        run "$rel/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --no-input \
            -c "$SOURCE/requirements.txt" "${pkgs[@]}"
    fi
    # The pristine configuration (factory reset), the deployment tools and their
    # documentation travel with the release they belong to.
    run mkdir -p "$rel/share/lnm"
    run cp -R "$SOURCE/config" "$rel/share/lnm/config"
    run cp -R "$SOURCE/deploy" "$rel/share/lnm/deploy"
    run find "$rel/share/lnm" -name __pycache__ -prune -exec rm -rf {} +
    run chmod -R go-w "$rel"
    if [ "$DRY_RUN" != 1 ]; then
        {
            echo "release=$RELEASE_ID"
            echo "version=$VERSION"
            echo "gpio=$GPIO_LIB"
            if [ "$SKIP_VENV" = 1 ]; then echo "venv=skipped"; else echo "venv=$PYTHON"; fi
            echo "model=$MODEL"
        } >"$stamp"
    fi
    manifest_add "dir 0755 root:root $RELEASE"
}

step_links() {
    step "Current release and commands"
    ensure_link "releases/$RELEASE_ID" "$LNM_CURRENT"
    ensure_link current "$LNM_OPT/venv"
    # The technician's lnm command: the appliance's journal unless told otherwise.
    install_text /usr/local/bin/lnm 0755 root:root <<EOF
#!/bin/sh
# lnm for technicians on the appliance (deploy/install.sh): the case journal in
# $LNM_DATA unless LNM_DATA_DIR or --journal says otherwise.
LNM_DATA_DIR="\${LNM_DATA_DIR:-$LNM_DATA}"
export LNM_DATA_DIR
exec $LNM_CURRENT/bin/lnm "\$@"
EOF
    local tool
    for tool in update backup restore factory-reset; do
        ensure_link "$LNM_CURRENT/share/lnm/deploy/$tool.sh" "/usr/local/sbin/lnm-$tool"
    done
}

# ---- configuration ----------------------------------------------------------------------
step_config() {
    step "Configuration in $LNM_ETC (copied only when absent; never overwritten)"
    local f rel
    install_if_absent "$SOURCE/config/default.toml" "$LNM_ETC/default.toml" 0640 "root:$LNM_GROUP"
    for f in "$SOURCE"/config/profiles/*.toml; do
        [ -e "$f" ] || continue
        install_if_absent "$f" "$LNM_ETC/profiles/$(basename "$f")" 0640 "root:$LNM_GROUP"
    done
    install_if_absent "$HERE/system/default-lnm" /etc/default/lnm 0644 root:root
    step "Validating $LNM_ETC"
    if [ "$DRY_RUN" = 1 ] && [ ! -f "${LNM_ROOT}$LNM_ETC/default.toml" ]; then
        note "would run: lnm config-check $LNM_ETC"
        return 0
    fi
    rel=${LNM_ROOT}$RELEASE
    if [ -x "$rel/bin/lnm" ]; then
        run "$rel/bin/lnm" config-check "${LNM_ROOT}$LNM_ETC" ||
            die "the configuration in ${LNM_ROOT}$LNM_ETC is not valid (see above); correct it and run the installer again"
    else
        run env PYTHONPATH="$SOURCE" "$PYTHON" -m app.cli config-check "${LNM_ROOT}$LNM_ETC" ||
            die "the configuration in ${LNM_ROOT}$LNM_ETC is not valid (see above); correct it and run the installer again"
    fi
}

# ---- services, device rules, audio, logs ------------------------------------------------
step_units() {
    step "systemd services"
    local before=$CHANGES unit
    for unit in $LNM_UNITS; do
        install_file "$HERE/systemd/$unit" "/etc/systemd/system/$unit" 0644 root:root
    done
    install_file "$HERE/system/journald-lnm.conf" /etc/systemd/journald.conf.d/lnm.conf 0644 root:root
    install_file "$HERE/system/tmpfiles-lnm.conf" /etc/tmpfiles.d/lnm.conf 0644 root:root
    install_file "$HERE/system/logrotate-lnm" /etc/logrotate.d/lnm 0644 root:root
    # Enabled the way systemctl enable does it (WantedBy=multi-user.target).
    for unit in $LNM_UNITS; do
        ensure_link "/etc/systemd/system/$unit" "/etc/systemd/system/multi-user.target.wants/$unit"
    done
    # The UI owns tty1: no login prompt there (technicians use tty2 or ssh).
    if [ -L "${LNM_ROOT}/etc/systemd/system/getty.target.wants/getty@tty1.service" ]; then
        note "disable the login prompt on tty1 (the UI's console)"
        remove_path /etc/systemd/system/getty.target.wants/getty@tty1.service
        manifest_add "getty - - tty1"
    elif grep -qx "getty - - tty1" "${LNM_ROOT}$LNM_MANIFEST" 2>/dev/null; then
        manifest_add "getty - - tty1"
    fi
    if [ "$CHANGES" != "$before" ]; then
        svc daemon-reload
        host_only systemd-tmpfiles --create /etc/tmpfiles.d/lnm.conf
        host_only systemctl try-restart systemd-journald.service
    fi
}

step_udev() {
    step "udev rule: the board as /dev/lnm-board (USB $BOARD_USB)"
    local vid=${BOARD_USB%%:*} pid=${BOARD_USB##*:} before=$CHANGES
    install_text /etc/udev/rules.d/60-lnm.rules 0644 root:root < <(
        sed -e "s/ATTRS{idVendor}==\"1209\"/ATTRS{idVendor}==\"$vid\"/" \
            -e "s/ATTRS{idProduct}==\"0001\"/ATTRS{idProduct}==\"$pid\"/" \
            "$HERE/udev/60-lnm.rules"
    )
    if [ "$CHANGES" != "$before" ]; then
        host_only udevadm control --reload-rules
        host_only udevadm trigger --action=change --subsystem-match=tty --subsystem-match=gpio
    fi
}

usb_card() {
    if [ -n "$AUDIO_CARD" ]; then
        printf '%s' "$AUDIO_CARD"
        return 0
    fi
    if [ -z "$LNM_ROOT" ] && [ -r /proc/asound/cards ]; then
        # " 1 [Device         ]: USB-Audio - USB Audio Device"
        sed -n 's/^ *[0-9]* \[\([^] ]*\) *\]: USB-Audio.*/\1/p' /proc/asound/cards | head -n 1
    fi
}

step_audio() {
    step "Audio output: $AUDIO"
    local card="" overlay="" cfg asound
    case "$AUDIO" in
        max98357a) card=MAX98357A overlay="dtoverlay=max98357a" ;;
        hifiberry-dac) card=sndrpihifiberry overlay="dtoverlay=hifiberry-dac" ;;
        headphones) card=Headphones ;;
        usb)
            card=$(usb_card)
            if [ -z "$card" ]; then
                card=Device
                warn "no USB sound card found; assuming the common name 'Device' (plug the speaker in and run again, or give --audio-card)"
            fi
            ;;
        none)
            note "audio left as it is"
            return 0
            ;;
    esac
    if cfg=$(config_txt); then
        if [ -n "$overlay" ]; then
            ensure_block "$cfg" < <(printf '[all]\n%s\n' "$overlay")
            note "a reboot activates a changed overlay"
        else
            remove_block "$cfg"
        fi
    elif [ -n "$overlay" ]; then
        warn "no /boot/firmware/config.txt (not a Raspberry Pi?): add '$overlay' to the firmware configuration yourself"
    fi
    asound=${LNM_ROOT}/etc/asound.conf
    if [ -f "$asound" ] && ! grep -q "deploy/install.sh" "$asound"; then
        warn "/etc/asound.conf exists and was not written by LNM; kept. Make its default device the $card card."
        return 0
    fi
    install_text /etc/asound.conf 0644 root:root < <(
        sed -e "s/@CARD@/$card/g" -e "s/@AUDIO@/$AUDIO/g" "$HERE/audio/asound.conf.in"
    )
}

step_start() {
    step "Starting the services (engine first, then the UI)"
    if [ -n "$LNM_ROOT" ] && [ -z "${LNM_SYSTEMCTL:-}" ]; then
        note "skipped under $LNM_ROOT"
        return 0
    fi
    if [ "$NO_START" = 1 ]; then
        note "skipped (--no-start); start with: systemctl start lnm-engine lnm-ui"
        return 0
    fi
    if [ "$CHANGES" -gt 0 ]; then
        note "something changed: restarting (never do this during a case)"
        svc restart lnm-engine.service
        svc restart lnm-ui.service
    else
        svc start lnm-engine.service lnm-ui.service
    fi
}

install_main() {
    step_preflight
    step_packages
    step_user
    step_dirs
    step_release
    step_config
    step_links
    step_units
    step_udev
    step_audio
    step "Install manifest $LNM_MANIFEST"
    # The choices of this installation, reused by deploy/update.sh.
    install_text "$LNM_OPT/install-options" 0644 root:root <<EOF
--gpio-lib $GPIO_LIB_OPTION --audio $AUDIO${AUDIO_CARD:+ --audio-card $AUDIO_CARD} --board-usb $BOARD_USB
EOF
    write_manifest
    step_start
    echo
    if [ "$DRY_RUN" = 1 ]; then
        say "Dry run: $CHANGES change(s) would be made; nothing was changed."
    elif [ "$CHANGES" = 0 ]; then
        say "LNM $RELEASE_ID is installed; nothing needed changing."
    else
        say "LNM $RELEASE_ID is installed ($CHANGES change(s))."
    fi
}

# ---- uninstall ---------------------------------------------------------------------------
# Paths the installer manages, for a system whose manifest is missing.
FALLBACK_REMOVE="/etc/systemd/system/multi-user.target.wants/lnm-engine.service
/etc/systemd/system/multi-user.target.wants/lnm-ui.service
/etc/systemd/system/lnm-engine.service
/etc/systemd/system/lnm-ui.service
/etc/systemd/journald.conf.d/lnm.conf
/etc/tmpfiles.d/lnm.conf
/etc/logrotate.d/lnm
/etc/udev/rules.d/60-lnm.rules
/usr/local/bin/lnm
/opt/lnm/install-options
/usr/local/sbin/lnm-update
/usr/local/sbin/lnm-backup
/usr/local/sbin/lnm-restore
/usr/local/sbin/lnm-factory-reset"

# prune_parents PATH: under a destination directory, remove the directories the
# installer created for PATH once they are empty (on a system they belong to the OS).
prune_parents() {
    [ -n "$LNM_ROOT" ] || return 0
    local dir
    dir=$(dirname "$1")
    while [ "$dir" != / ] && [ -d "${LNM_ROOT}$dir" ] && [ -z "$(ls -A "${LNM_ROOT}$dir")" ]; do
        [ "$DRY_RUN" = 1 ] || rmdir "${LNM_ROOT}$dir"
        dir=$(dirname "$dir")
    done
}

uninstall_main() {
    step "Uninstalling LNM from ${LNM_ROOT:-this system}"
    need_root
    local manifest kind mode owner path rest cfg asound
    manifest=${LNM_ROOT}$LNM_MANIFEST
    if [ "$PURGE" = 1 ]; then
        confirm PURGE "--purge deletes every case in ${LNM_ROOT}$LNM_DATA, the settings in ${LNM_ROOT}$LNM_ETC and the user $LNM_USER"
    fi
    svc stop lnm-ui.service lnm-engine.service || true
    step "Removing the program, services and rules"
    local -a paths=()
    if [ -f "$manifest" ]; then
        while read -r kind mode owner path rest; do
            case "$kind" in
                file | link) paths+=("$path") ;;
            esac
            : "$mode" "$owner" "$rest"
        done < <(grep -v '^#' "$manifest")
    else
        warn "no install manifest at $manifest; removing the standard paths"
        mapfile -t paths <<<"$FALLBACK_REMOVE"
    fi
    for path in "${paths[@]}"; do
        case "$path" in
            "$LNM_OPT"/* | "$LNM_ETC"/* | "$LNM_DATA"/* | /etc/default/lnm) ;; # below
            *)
                remove_path "$path"
                prune_parents "$path"
                ;;
        esac
    done
    asound=${LNM_ROOT}/etc/asound.conf
    if [ -f "$asound" ] && grep -q "deploy/install.sh" "$asound"; then
        remove_path /etc/asound.conf
    fi
    if cfg=$(config_txt); then remove_block "$cfg"; fi
    if grep -qx "getty - - tty1" "$manifest" 2>/dev/null; then
        note "give tty1 its login prompt back"
        ensure_link /lib/systemd/system/getty@.service /etc/systemd/system/getty.target.wants/getty@tty1.service
    fi
    remove_path "$LNM_OPT"
    remove_empty_dir /etc/systemd/journald.conf.d
    prune_parents "$LNM_OPT"
    svc daemon-reload
    host_only udevadm control --reload-rules
    if [ "$PURGE" = 1 ]; then
        step "Purging cases, settings and the user"
        remove_path "$LNM_DATA"
        remove_path "$LNM_ETC"
        remove_path /etc/default/lnm
        if [ -n "$LNM_ROOT" ]; then
            local f
            for f in /etc/passwd /etc/group; do
                [ -f "${LNM_ROOT}$f" ] || continue
                if grep -q "^$LNM_USER:\|:$LNM_USER\(,\|$\)\|,$LNM_USER\(,\|$\)" "${LNM_ROOT}$f"; then
                    note "remove $LNM_USER from $f"
                    [ "$DRY_RUN" = 1 ] || sed -i -e "/^$LNM_USER:/d" -e "s/:$LNM_USER,/:/; s/,$LNM_USER\\(,\\|\$\\)/\\1/; s/:$LNM_USER\$/:/" "${LNM_ROOT}$f"
                    changed
                fi
            done
        elif getent passwd "$LNM_USER" >/dev/null; then
            run userdel "$LNM_USER"
            getent group "$LNM_GROUP" >/dev/null && run groupdel "$LNM_GROUP"
            changed
        fi
        say "Purged: no case, setting or user of LNM is left."
    else
        say "Uninstalled. Kept: the cases in $LNM_DATA, the settings in $LNM_ETC and /etc/default/lnm, the user $LNM_USER (--uninstall --purge removes them)."
    fi
}

if [ "$UNINSTALL" = 1 ]; then
    uninstall_main
else
    install_main
fi
