# Sourced by the set-up scripts: Debian packages, installed as root (or through `sudo -n`).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# from the local package lists first, and after an update if those are missing or stale
apt_install() {
    as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null 2>&1 || {
        as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
        as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null
    }
}
