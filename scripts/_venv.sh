# shellcheck shell=bash
# Shared by scripts/test and scripts/demo (sourced, from the repository root): make sure `.venv` exists,
# runs Python >= 3.11, and has `tracker[dev]` installed in editable mode.
#
# The install is redone only when pyproject.toml changes (a stamp in .venv records what was installed), so
# later runs need no network: building the editable wheel would otherwise fetch hatchling every time.

TRACKER_MIN_PYTHON="3.11"
TRACKER_VENV=".venv"
TRACKER_EXTRAS="dev"

die() {
    echo "error: $*" >&2
    exit 2
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# apt_install PKG...: install Debian packages, only when root on an apt system; fails otherwise.
apt_install() {
    is_root && command -v apt-get >/dev/null 2>&1 || return 1
    echo "== installing $* (apt-get)"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

python_ok() { # python_ok PYTHON: true if PYTHON runs and is new enough
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

python_version() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo "unknown version"
}

find_python() { # prints the first suitable interpreter: python3.11 preferred, then python3
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

python_missing_message() {
    local found=""
    if command -v python3 >/dev/null 2>&1; then
        found=" (found python3 $(python_version python3))"
    fi
    echo "tracker needs Python >= $TRACKER_MIN_PYTHON with the venv module${found}." \
        "On Debian 12: sudo apt-get install python3 python3-venv"
}

ensure_venv() {
    local py
    if [ -x "$TRACKER_VENV/bin/python" ] && ! python_ok "$TRACKER_VENV/bin/python"; then
        die "$TRACKER_VENV uses Python $(python_version "$TRACKER_VENV/bin/python");" \
            "tracker needs Python >= $TRACKER_MIN_PYTHON. Remove $TRACKER_VENV and run this again."
    fi
    # A venv without pip is what a failed `python3 -m venv` leaves behind (e.g. Debian without python3-venv).
    if [ ! -x "$TRACKER_VENV/bin/python" ] || ! "$TRACKER_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        if ! py="$(find_python)"; then
            apt_install python3 python3-venv || die "$(python_missing_message)"
            py="$(find_python)" || die "$(python_missing_message)"
        fi
        # Debian ships ensurepip (needed by venv) separately, in python3.X-venv.
        if ! "$py" -c 'import ensurepip' >/dev/null 2>&1; then
            local venv_pkg
            venv_pkg="python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
            apt_install "$venv_pkg" || die "$py lacks the venv/ensurepip module. On Debian: sudo apt-get install $venv_pkg"
        fi
        echo "== creating $TRACKER_VENV with $py ($(python_version "$py"))"
        "$py" -m venv --clear "$TRACKER_VENV"
    fi

    local stamp="$TRACKER_VENV/.tracker-install-stamp" want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) [$TRACKER_EXTRAS]"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "== installing tracker[$TRACKER_EXTRAS] into $TRACKER_VENV"
        "$TRACKER_VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$TRACKER_EXTRAS]"
        echo "$want" >"$stamp"
    fi
}
