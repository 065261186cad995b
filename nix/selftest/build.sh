#!/bin/sh
# Builder of nix/selftest/default.nix: one role's kernel + initrd (or container root
# file system) from host packages.
#
# Inputs (derivation attributes, in the environment): out, agent, metrics (may be
# empty), sync (may be empty: the nxc-sync command), roleName, startup, packages
# (newline-separated absolute paths), kernelVersion (may be empty), format (initrd or
# rootfs).
# Runs as a Nix build user with /bin/sh and the host's tools; writes
#   initrd: $out/kernel  $out/initrd  $out/kernel-params  $out/info.json
#   rootfs: $out/rootfs.tar  $out/info.json   (no kernel: a container runs on the host's)
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C
umask 022

fail() {
	echo "nix/selftest ($roleName): $*" >&2
	exit 1
}

work=${NIX_BUILD_TOP:-${TMPDIR:-/tmp}}/nxc-selftest
R=$work/root
rm -rf "$work"
mkdir -p "$work" "$R" "$out"
format=${format:-initrd}
case $format in initrd | rootfs) ;; *) fail "unknown format '$format' (expected initrd or rootfs)" ;; esac

# --- kernel -------------------------------------------------------------------------
if [ "$format" = rootfs ]; then
	kver=host
elif [ -n "${kernelVersion:-}" ]; then
	kver=$kernelVersion
else
	kver=
	for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
		v=${k#/boot/vmlinuz-}
		if [ -d "/lib/modules/$v" ]; then kver=$v; break; fi
	done
	[ -n "$kver" ] || fail "no /boot/vmlinuz-* with modules in /lib/modules (apt-get install linux-image-amd64)"
fi
if [ "$format" = initrd ]; then
	[ -r "/boot/vmlinuz-$kver" ] || fail "/boot/vmlinuz-$kver is missing or unreadable"
	moddir=/lib/modules/$kver
	[ -r "$moddir/modules.dep" ] || fail "$moddir/modules.dep is missing"
	cp "/boot/vmlinuz-$kver" "$out/kernel"
	chmod 444 "$out/kernel"
fi

# --- filesystem layout (merged /usr) ------------------------------------------------
mkdir -p "$R/usr/bin" "$R/usr/sbin" "$R/usr/lib" "$R/usr/lib64" "$R/usr/share" \
	"$R/etc/nxc" "$R/etc/ssh" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp" "$R/root" \
	"$R/var/log" "$R/var/empty" "$R/var/tmp" "$R/mnt" "$R/srv" "$R/home"
ln -s usr/bin "$R/bin"
ln -s usr/sbin "$R/sbin"
ln -s usr/lib "$R/lib"
ln -s usr/lib64 "$R/lib64"
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 700 "$R/root"
chmod 555 "$R/var/empty"

elfs=$work/elfs
: >"$elfs"

# install SRC DEST: copy a host file (following links) to DEST in the image
install_file() {
	mkdir -p "$R${2%/*}"
	cp -L "$1" "$R$2" || fail "cannot copy $1"
	chmod u+w "$R$2"
	echo "$R$2" >>"$elfs"
}

# host_tool NAME PACKAGE: the host path of a tool, or fail with an install hint
host_tool() {
	for d in /usr/sbin /usr/bin /sbin /bin /usr/lib/openssh; do
		if [ -x "$d/$1" ] && [ ! -d "$d/$1" ]; then
			echo "$d/$1"
			return 0
		fi
	done
	fail "$1 is not installed on the build host (apt-get install $2)"
}

# --- busybox (static) with applet links ---------------------------------------------
bb=$(host_tool busybox busybox-static)
if ldd "$bb" 2>/dev/null | grep -q '=>'; then
	fail "$bb is dynamically linked (apt-get install busybox-static)"
fi
cp "$bb" "$R/usr/bin/busybox"
chmod 755 "$R/usr/bin/busybox"

# --- real tools (installed before the applet links, which never replace them) ----------
if dash=$(host_tool dash dash 2>/dev/null); then
	install_file "$dash" /usr/bin/dash
	ln -s dash "$R/usr/bin/sh"
else
	ln -s busybox "$R/usr/bin/sh"
fi
# bash, as on NixOS: the driver runs scenario commands with bash (pipefail, arrays,
# [[ ]], /dev/tcp) when the node has it
install_file "$(host_tool bash bash)" /usr/bin/bash
install_file "$(host_tool ip iproute2)" /usr/sbin/ip
install_file "$(host_tool tc iproute2)" /usr/sbin/tc
install_file "$(host_tool ss iproute2)" /usr/sbin/ss
for d in /usr/lib/*/tc /usr/lib/tc; do
	[ -d "$d" ] || continue
	for f in "$d"/*.dist; do
		[ -e "$f" ] && install_file "$f" "$f"
	done
	break
done
install_file "$(host_tool kexec kexec-tools)" /usr/sbin/kexec
install_file "$(host_tool sshd openssh-server)" /usr/sbin/sshd
install_file "$(host_tool sftp-server openssh-server)" /usr/lib/openssh/sftp-server
install_file "$(host_tool ssh openssh-client)" /usr/bin/ssh
install_file "$(host_tool scp openssh-client)" /usr/bin/scp
install_file "$(host_tool ssh-keygen openssh-client)" /usr/bin/ssh-keygen
install_file "$(host_tool iperf3 iperf3)" /usr/bin/iperf3
install_file "$(host_tool fping fping)" /usr/bin/fping
# dlopen()ed by glibc for pthread_cancel (not in ldd's output)
for f in /lib/*/libgcc_s.so.1 /usr/lib/*/libgcc_s.so.1; do
	[ -e "$f" ] && { install_file "$f" "$f"; break; }
done

# --- a Grid'5000-like standard environment (g5kStdenv): sudo + sudo-g5k ------------------
if [ "${g5kStdenv:-}" = 1 ]; then
	install_file "$(host_tool sudo sudo)" /usr/bin/sudo
	for f in /usr/libexec/sudo/sudoers.so /usr/libexec/sudo/libsudo_util.so.0 /usr/libexec/sudo/sesh; do
		[ -e "$f" ] || fail "$f is missing (apt-get install sudo)"
		install_file "$f" "$f"
	done
	pam=
	for f in /usr/lib/*/security/pam_permit.so /lib/*/security/pam_permit.so; do
		[ -e "$f" ] && { pam=$f; break; }
	done
	[ -n "$pam" ] || fail "pam_permit.so is missing (apt-get install libpam-modules)"
	install_file "$pam" "$pam"
	# setuid root: a Nix build may not set the bit on a file; the archive gets it (below)
	setuid_files=usr/bin/sudo
	mkdir -p "$R/etc/pam.d" "$R/etc/sudoers.d" "$R/var/lib/sudo" "$R/etc/g5k"
	for s in auth account session password; do
		echo "$s required $pam"
	done >"$R/etc/pam.d/sudo"
	printf 'Plugin sudoers_policy sudoers.so\nPlugin sudoers_io sudoers.so\n' >"$R/etc/sudo.conf"
	cat >"$R/etc/sudoers" <<'EOF'
# Grid'5000's sudo-g5k gives the job's owner root on the job's nodes (non-deploy jobs).
Defaults env_reset, secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
root ALL=(ALL:ALL) ALL
%sudo ALL=(ALL:ALL) NOPASSWD: ALL
EOF
	chmod 440 "$R/etc/sudoers"
	cat >"$R/usr/bin/sudo-g5k" <<'EOF'
#!/bin/sh
# Root for the job's owner, as Grid'5000's sudo-g5k gives it (a root shell without arguments).
[ "$#" -gt 0 ] || set -- -i
exec /usr/bin/sudo -n "$@"
EOF
	chmod 755 "$R/usr/bin/sudo-g5k"
	cp "$g5kStdenvInit" "$R/etc/g5k/stdenv-init"
	chmod 755 "$R/etc/g5k/stdenv-init"
fi

# the role's extra packages
if [ -n "${packages:-}" ]; then
	printf '%s\n' "$packages" >"$work/packages"
	while IFS= read -r p; do
		[ -n "$p" ] || continue
		[ -e "$p" ] || fail "package $p does not exist on the build host"
		[ -f "$p" ] || fail "package $p is not a file (give the binaries themselves)"
		[ -r "$p" ] || fail "package $p is not readable by the Nix build user"
		# The image lands in the world-readable store: never publish a private file.
		[ -n "$(find "$p" -maxdepth 0 -perm -o=r)" ] ||
			fail "package $p is not readable by other users: the Nix store would publish it to every user"
		install_file "$p" "$p"
	done <"$work/packages"
fi

# Debian's busybox 1.35 wget dies of SIGSEGV when given -T (its timeout option), even
# before any network access: then /usr/bin/wget runs it under `timeout` instead.
wget_status=0
"$R/usr/bin/busybox" wget -T 1 -O /dev/null 'http://[' >/dev/null 2>&1 || wget_status=$?
if [ "$wget_status" -ge 128 ]; then
	cat >"$R/usr/bin/wget" <<'EOF'
#!/bin/sh
# busybox wget crashes on -T/--timeout here: drop it and bound the whole run instead
secs=
n=$#
while [ "$n" -gt 0 ]; do
	a=$1
	shift
	n=$((n - 1))
	case $a in
	-T | --timeout) secs=$1; shift; n=$((n - 1)) ;;
	-T*) secs=${a#-T} ;;
	--timeout=*) secs=${a#--timeout=} ;;
	*) set -- "$@" "$a" ;;
	esac
done
[ -z "$secs" ] || exec /usr/bin/busybox timeout "$secs" /usr/bin/busybox wget "$@"
exec /usr/bin/busybox wget "$@"
EOF
	chmod 755 "$R/usr/bin/wget"
fi

# applet links, for every applet no real tool provides
"$R/usr/bin/busybox" --list-full | while IFS= read -r a; do
	case $a in
	bin/* | usr/bin/*) dest=/usr/bin/${a##*/} ;;
	sbin/* | usr/sbin/*) dest=/usr/sbin/${a##*/} ;;
	*) continue ;;
	esac
	n=${a##*/}
	[ -e "$R/usr/bin/$n" ] || [ -e "$R/usr/sbin/$n" ] || [ -L "$R$dest" ] || ln -s /usr/bin/busybox "$R$dest"
done

# --- shared libraries (ldd's closure, and the dynamic loader) --------------------------
libs=$work/libs
: >"$libs"
while IFS= read -r f; do
	out_ldd=$(ldd "$f" 2>/dev/null) || continue # not a dynamic ELF file
	if printf '%s\n' "$out_ldd" | grep -q 'not found'; then
		fail "$f needs libraries the host lacks: $(printf '%s\n' "$out_ldd" | grep 'not found' | tr -s ' \t' ' ')"
	fi
	printf '%s\n' "$out_ldd" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' >>"$libs"
done <"$elfs"
sort -u "$libs" | while IFS= read -r lib; do
	[ -e "$R$lib" ] && continue
	mkdir -p "$R${lib%/*}"
	cp -L "$lib" "$R$lib" || fail "cannot copy library $lib"
done

# --- kernel modules (VMs only: a container uses the host kernel's) -------------------
: >"$R/etc/nxc/modules.load"
if [ "$format" = initrd ]; then
	# Loaded at boot, in this order after their dependencies:
	preload="virtio_pci virtio_net virtio_console qemu_fw_cfg sch_netem sch_htb cls_u32 sch_ingress ifb act_mirred"
	# Shipped for modprobe (tc loads qdisc/classifier/action modules on demand):
	ondemand="virtio_blk virtio_rng virtio_balloon sch_tbf sch_prio sch_fq sch_red sch_sfq act_gact cls_basic cls_matchall cls_fw cls_flower em_u32 em_cmp veth bridge 8021q dummy"

	# module_line NAME: "path: deps…" from modules.dep ("-" and "_" are the same)
	module_line() {
		awk -F: -v want="$1" '
			BEGIN { gsub(/-/, "_", want) }
			{ b = $1; sub(/.*\//, "", b); sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b)
			  if (b == want) { print; exit } }' "$moddir/modules.dep"
	}
	is_builtin() {
		[ -r "$moddir/modules.builtin" ] || return 1
		awk -v want="$1" '
			BEGIN { gsub(/-/, "_", want) }
			{ b = $0; sub(/.*\//, "", b); sub(/\.ko$/, "", b); gsub(/-/, "_", b); if (b == want) { found = 1; exit } }
			END { exit !found }' "$moddir/modules.builtin"
	}

	order=$work/modules.order
	: >"$order"
	add_module() { # NAME REQUIRED(0/1): append its dependencies then itself to $order
		line=$(module_line "$1")
		if [ -z "$line" ]; then
			is_builtin "$1" && return 0
			[ "$2" = 1 ] && fail "kernel $kver has no module $1"
			return 0
		fi
		path=${line%%:*}
		deps=${line#*:}
		# modules.dep lists a module's dependencies so that each needs only later ones
		for dep in $(printf '%s\n' $deps | awk '{ a[NR] = $0 } END { for (i = NR; i > 0; i--) print a[i] }'); do
			grep -qxF "$dep" "$order" || echo "$dep" >>"$order"
		done
		grep -qxF "$path" "$order" || echo "$path" >>"$order"
	}
	[ "${g5kStdenv:-}" != 1 ] || preload="$preload 9pnet_virtio 9p"
	for m in $preload; do add_module "$m" 1; done
	cp "$order" "$work/preload.order"
	for m in $ondemand; do add_module "$m" 0; done

	rmod=$R/lib/modules/$kver
	mkdir -p "$rmod"
	: >"$rmod/modules.dep"
	: >"$R/etc/nxc/modules.load"
	while IFS= read -r path; do
		src=$moddir/$path
		case $path in
		*.ko.xz) dst=${path%.xz}; decomp="xz -dc" ;;
		*.ko.zst) dst=${path%.zst}; decomp="zstd -dcq" ;;
		*.ko.gz) dst=${path%.gz}; decomp="gzip -dc" ;;
		*) dst=$path; decomp= ;;
		esac
		mkdir -p "$rmod/${dst%/*}"
		if [ -n "$decomp" ]; then $decomp "$src" >"$rmod/$dst"; else cp "$src" "$rmod/$dst"; fi
		deps=$(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$moddir/modules.dep" | sed -e 's/\.ko\.\(xz\|zst\|gz\)/.ko/g')
		echo "$dst:$deps" >>"$rmod/modules.dep"
		if grep -qxF "$path" "$work/preload.order"; then
			echo "/lib/modules/$kver/$dst" >>"$R/etc/nxc/modules.load"
		fi
	done <"$order"
	for f in modules.builtin modules.builtin.modinfo modules.order; do
		[ -r "$moddir/$f" ] && cp "$moddir/$f" "$rmod/$f"
	done
fi

# --- /etc ------------------------------------------------------------------------------
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534:sshd privilege separation:/run/sshd:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
# "*": no password login, but not a locked account (sshd refuses locked ones)
cat >"$R/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
sshd:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
chmod 600 "$R/etc/shadow"
cat >"$R/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
EOF
for f in /etc/protocols /etc/services /etc/ethertypes; do
	[ -r "$f" ] && cp "$f" "$R$f"
done
echo nxc >"$R/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$R/etc/hosts"
: >"$R/etc/resolv.conf"
cat >"$R/etc/os-release" <<EOF
NAME="nxc selftest image"
ID=nxc-selftest
PRETTY_NAME="nxc selftest image (host packages, kernel $kver)"
VARIANT_ID=$roleName
EOF
cat >"$R/etc/profile" <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ -r /etc/nxc/env ]; then
	set -a
	. /etc/nxc/env
	set +a
fi
PS1='${NXC_NODE:-nxc}# '
EOF

install_file "$agent" /usr/bin/nxc-agent
chmod 755 "$R/usr/bin/nxc-agent"
# The metrics sampler the driver scrapes (Debian's prometheus-node-exporter runs here
# too, but costs 5 MB of initrd, ~16 MB of RAM and 2-3x the guest CPU per scrape).
if [ -n "${metrics:-}" ]; then
	install_file "$metrics" /usr/bin/nxc-metrics
	chmod 755 "$R/usr/bin/nxc-metrics"
fi
if [ -n "${sync:-}" ]; then
	install_file "$sync" /usr/bin/nxc-sync
	chmod 755 "$R/usr/bin/nxc-sync"
fi
if [ -n "${startup:-}" ]; then
	printf '%s\n' "$startup" >"$R/etc/nxc/startup"
	chmod 755 "$R/etc/nxc/startup"
fi

# --- init --------------------------------------------------------------------------------
if [ "$format" = initrd ]; then
	cat >"$R/init" <<'EOF'
#!/bin/sh
# nxc selftest /init: mount the API filesystems, load the modules, then hand PID 1 to
# busybox init (zombie reaping, poweroff/reboot), which runs /etc/inittab.
export PATH=/usr/sbin:/usr/bin
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=755 devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /run/nxc /run/sshd
# Reading /dev/random makes the kernel gather entropy now (~1 s on an emulated CPU)
# rather than when sshd first needs it.
/usr/bin/busybox head -c 1 /dev/random >/dev/null 2>&1 &
while read -r m; do
	/usr/bin/busybox insmod "$m" || echo "nxc-init: cannot load module $m"
done </etc/nxc/modules.load
exec /usr/bin/busybox init
EOF
else
	cat >"$R/init" <<'EOF'
#!/bin/sh
# nxc selftest container /init: the container manager mounted /proc, /sys, /dev and the
# tmpfs /run and /tmp; hand PID 1 to busybox init (zombie reaping, poweroff on SIGUSR2),
# which runs /etc/inittab.
export PATH=/usr/sbin:/usr/bin
mkdir -p /run/nxc /run/sshd
exec /usr/bin/busybox init
EOF
fi
chmod 755 "$R/init"

cat >"$R/etc/inittab" <<'EOF'
::sysinit:/etc/nxc/rc.sysinit
::once:/etc/nxc/rc.startup
::ctrlaltdel:/usr/sbin/reboot
::shutdown:/etc/nxc/rc.shutdown
EOF

if [ "${g5kStdenv:-}" = 1 ]; then
	cat >"$R/etc/nxc/rc.sysinit" <<'EOF'
#!/bin/sh
# The rehearsal node's standard environment: user, keys, addresses, sshd.
/usr/bin/busybox sh /etc/g5k/stdenv-init 2>>/run/g5k-stdenv.log
exit 0
EOF
elif [ "$format" = initrd ]; then
	cat >"$R/etc/nxc/rc.sysinit" <<'EOF'
#!/bin/sh
# The agent sets the node up from the deployment and prints the ready line. It runs
# under busybox ash; commands coming through the backdoor run under /bin/sh.
export HOME=/root NXC_AGENT_SHELL="/usr/bin/busybox sh"
/usr/bin/busybox hostname nxc
/usr/bin/busybox sh /usr/bin/nxc-agent up 2>>/run/nxc/agent.log
exit 0
EOF
else
	cat >"$R/etc/nxc/rc.sysinit" <<'EOF'
#!/bin/sh
# The agent sets the node up and prints the ready line on the console (the container's
# log). A container has no kernel command line of its own: the runtime mounts the
# node's inputs at /nxc-input, with the agent's arguments in agent.env.
export HOME=/root NXC_AGENT_SHELL="/usr/bin/busybox sh"
NXC_AGENT_ARGS=
[ -r /nxc-input/agent.env ] && . /nxc-input/agent.env
# shellcheck disable=SC2086 # several arguments
/usr/bin/busybox sh /usr/bin/nxc-agent up $NXC_AGENT_ARGS 2>>/run/nxc/agent.log
exit 0
EOF
fi

cat >"$R/etc/nxc/rc.startup" <<'EOF'
#!/bin/sh
# Once the agent is ready: register the node with the sync service (discovery),
# wait for the role's start_after conditions, then run the role's startup.
if [ ! -e /run/nxc/ready ]; then
	[ -s /etc/nxc/startup ] && echo "nxc-startup: the agent did not get ready: role startup not run" >/dev/console
	exit 0
fi
cd /
export HOME=/root
set -a
. /etc/nxc/env
set +a
if [ -s /etc/nxc/sync ] && [ -x /usr/bin/nxc-sync ]; then
	if ! /usr/bin/busybox sh /usr/bin/nxc-sync announce 2>>/run/nxc/sync.log; then
		echo "nxc-startup: nxc-sync announce failed: $(tail -n 1 /run/nxc/sync.log)" >/dev/console
	fi
	if ! /usr/bin/busybox sh /usr/bin/nxc-sync start-after 2>>/run/nxc/sync.log; then
		echo "nxc-startup: start_after not met: $(tail -n 1 /run/nxc/sync.log): role startup not run" >/dev/console
		exit 0
	fi
fi
: >/run/nxc/started
[ -s /etc/nxc/startup ] || exit 0
/bin/sh /etc/nxc/startup </dev/null >>/run/nxc/startup.log 2>&1
st=$?
[ "$st" -eq 0 ] || echo "nxc-startup: role startup exited with status $st (see /run/nxc/startup.log)" >/dev/console
exit 0
EOF

cat >"$R/etc/nxc/rc.shutdown" <<'EOF'
#!/bin/sh
sync
exit 0
EOF
chmod 755 "$R/etc/nxc/rc.sysinit" "$R/etc/nxc/rc.startup" "$R/etc/nxc/rc.shutdown"

printf '{"image_kind": "selftest", "role": "%s", "kernel_version": "%s", "agent": "%s"}\n' \
	"$roleName" "$kver" "$agent" >"$R/etc/nxc/image.json"

# --- container root file system --------------------------------------------------------
if [ "$format" = rootfs ]; then
	# Owned by root whatever build user made it; fixed order and times: the same host
	# packages give the same tarball.
	find "$R" -exec touch -h -d @1 {} +
	tar -C "$R" --sort=name --numeric-owner --owner=0 --group=0 --mtime=@1 -cf "$out/rootfs.tar" . ||
		fail "cannot write rootfs.tar"
	chmod 444 "$out/rootfs.tar"
	size=$(wc -c <"$out/rootfs.tar")
	cat >"$out/info.json" <<EOF
{
  "image_kind": "selftest",
  "format": "rootfs",
  "role": "$roleName",
  "rootfs_bytes": $size,
  "host_fingerprint": "$hostFingerprint"
}
EOF
	exit 0
fi

# --- initrd ------------------------------------------------------------------------------
# Device nodes cannot be made by a build user: they go in a second, hand-written newc
# archive (the kernel unpacks concatenated archives). /dev/console must exist before
# /init runs, or init starts without stdin/stdout/stderr.
newc() { # NAME MODE(octal) RDEV_MAJOR RDEV_MINOR INO
	namesize=$((${#1} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		"$5" "$2" 0 0 1 0 0 0 0 "$3" "$4" "$namesize" 0
	printf '%s' "$1"
	pad=$(((4 - (110 + namesize) % 4) % 4 + 1))
	head -c "$pad" /dev/zero
}
newc_file() { # NAME MODE(octal, with the file type) INO FILE: a member with data
	size=$(wc -c <"$4")
	namesize=$((${#1} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		"$3" "$2" 0 0 1 1 "$size" 0 0 0 0 "$namesize" 0
	printf '%s' "$1"
	pad=$(((4 - (110 + namesize) % 4) % 4 + 1))
	head -c "$pad" /dev/zero
	cat "$4"
	head -c $(((4 - size % 4) % 4)) /dev/zero
}
find "$R" -exec touch -h -d @1 {} +
(cd "$R" && find . | sort | grep -vxF -e "./${setuid_files:-/}" | cpio --quiet -o -H newc -R 0:0 --reproducible) >"$work/initrd.cpio"
{
	newc dev 040755 0 0 1
	newc dev/console 020600 5 1 2
	newc dev/null 020666 1 3 3
	ino=4
	for f in ${setuid_files:-}; do
		newc_file "$f" 0104755 "$ino" "$R/$f"
		ino=$((ino + 1))
	done
	newc TRAILER!!! 0 0 0 0
} >>"$work/initrd.cpio"
gzip -9 -n -c "$work/initrd.cpio" >"$out/initrd"
chmod 444 "$out/initrd"

# norandmaps: without address space randomisation, QEMU's TCG reuses the code it
# translated for dynamically linked programs across processes: exec becomes ~4x
# faster on an emulated CPU (role.aslr = true keeps randomisation).
params="rdinit=/init panic=-1"
[ "${aslr:-}" = 1 ] || params="$params norandmaps"
printf '%s\n' "$params" >"$out/kernel-params"

size=$(wc -c <"$out/initrd")
raw=$(wc -c <"$work/initrd.cpio")
mods=$(sed 's|.*/||; s|\.ko$||' "$R/etc/nxc/modules.load" | tr '\n' ' ')
cat >"$out/info.json" <<EOF
{
  "image_kind": "selftest",
  "role": "$roleName",
  "kernel_version": "$kver",
  "initrd_bytes": $size,
  "initrd_uncompressed_bytes": $raw,
  "preloaded_modules": "${mods% }",
  "host_fingerprint": "$hostFingerprint"
}
EOF
