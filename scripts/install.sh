#!/usr/bin/env bash
# Install permwatch into ./.venv (created if missing). With --test, also what the tests need:
# Debian packages (acl tools, Java and Maven for the Kafka broker), the Kafka jars, test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
[[ "${1:-}" == "--test" ]] && with_test=1

apt_install() {
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    # two installs at once (several checkouts on one machine) would fight over dpkg's lock: take turns
    exec {apt_lock}>/tmp/.permwatch-apt.lock
    flock "$apt_lock"
    if [[ ! -f /tmp/.permwatch-apt-updated ]]; then
        $sudo apt-get update -qq && touch /tmp/.permwatch-apt-updated
    fi
    # Server packages (slapd, samba, 389-ds, alertmanager, rsyslog) must not start their system services:
    # the tests start their own instances on loopback ports, and a Debian slapd on :389 would
    # take the port Samba's AD DC needs. policy-rc.d exit 101 = "do not start".
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null && $sudo chmod +x $policy && added_policy=1
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
    [[ $added_policy -eq 1 ]] && $sudo rm -f $policy
    return $status
}

if [[ $with_test -eq 1 ]]; then
    missing=()
    command -v setfacl >/dev/null || missing+=(acl)
    command -v java >/dev/null || missing+=(default-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    { command -v slapd >/dev/null || [ -x /usr/sbin/slapd ]; } && command -v ldapadd >/dev/null || missing+=(slapd ldap-utils)
    command -v chromium >/dev/null || missing+=(chromium)
    [ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
    command -v promtool >/dev/null || missing+=(prometheus)
    [ -x /usr/sbin/ns-slapd ] || missing+=(389-ds-base)
    # the syslog sink's tests run Debian's rsyslog as a receiver (imtcp, TLS via the gtls driver); its system
    # service stays off (policy-rc.d below), the tests start their own instance on a loopback port
    [ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
    [[ $(dpkg-query -W -f='${Status}' rsyslog-gnutls 2>/dev/null) == *"ok installed" ]] || missing+=(rsyslog-gnutls)
    # the Kerberos extra is built from source (below): MIT Kerberos' headers and a C compiler
    command -v krb5-config >/dev/null || missing+=(libkrb5-dev)
    command -v cc >/dev/null || missing+=(gcc)
    command -v openssl >/dev/null || missing+=(openssl)
    # the Linux audit actor source's test runs Debian's auditd on a log of its own (the service stays off)
    [ -x /usr/sbin/auditd ] || missing+=(auditd)
    # samba-ad-provision holds the provisioning templates; samba-ad-dc only recommends it (since deb12u4)
    # smbclient brings smbclient and smbcacls, the SMB clients the NT-ACL tests use as Samba's own oracle
    command -v smbcacls >/dev/null && command -v smbclient >/dev/null || missing+=(smbclient)
    # python3-samba (a dependency of samba, named for the NT-ACL revert it serves: collectors/fs/samba_set_nt_acl.py)
    for package in samba samba-ad-dc samba-ad-provision python3-samba; do
        [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == *"ok installed" ]] || missing+=("$package")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "installing Debian packages: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    # Debian's own python3 ships venv's pip bootstrap (ensurepip) in a package of its own
    python3 -c "import ensurepip" 2>/dev/null || apt_install python3-venv
    python3 -m venv .venv
fi
extra=""
[[ $with_test -eq 1 ]] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}"

if [[ $with_test -eq 1 ]]; then
    # Kerberos for the remote SMB collector (issue 17): the gssapi and krb5 packages have no Linux wheels, pip
    # builds them against MIT Kerberos' headers (libkrb5-dev) with the C compiler, ~3-4 min on 2 cores; built
    # wheels stay in pip's cache. Its test logs in to a Samba AD DC's own KDC. Built while Maven fetches Kafka.
    kerberos_log=$(mktemp)
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,kerberos]" >"$kerberos_log" 2>&1 &
    kerberos=$!
    bash scripts/kafka/fetch.sh >/dev/null
    if ! wait "$kerberos"; then
        cat "$kerberos_log" >&2
        exit 1
    fi
    rm -f "$kerberos_log"
fi
