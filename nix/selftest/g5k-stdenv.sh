#!/bin/sh
# Init of the rehearsal testbed's "standard environment" (nix/selftest with
# g5k_stdenv = true): what a Grid'5000 node runs when a job hands it out. Its
# settings come from QEMU fw_cfg files opt/g5k/<name> (nxc/testbeds/rehearsal):
#   hostname      the node's short name (paravance-1)
#   user, uid     the job owner's account (member of group sudo: sudo-g5k works)
#   user_keys     the owner's authorized_keys
#   admin_keys    root's authorized_keys (the testbed's own access, as Kadeploy has)
#   hostkey       the node's ssh host key (OpenSSH private key; stable across boots)
#   site_mac, site_addr, site_gw
#                 the site NIC (by MAC), its address (CIDR) and the default route
#   mgmt_addr     the address of every other NIC (the testbed's forwarded ssh port)
#   shared_dir    where to mount the testbed's shared directory (the NFS home)
# then starts sshd and prints "g5k-stdenv ready boot_id=<uuid>" on the console.
export PATH=/usr/sbin:/usr/bin
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/g5k
get() { cat "$fw/$1/raw" 2>/dev/null; }
say() { echo "g5k-stdenv: $*" >/dev/console; }
fail() {
	say "error: $*"
	exit 1
}

[ -d "$fw" ] || fail "no settings in fw_cfg (opt/g5k)"
name=$(get hostname)
[ -n "$name" ] && hostname "$name"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost\n' "${name:-localhost}" >/etc/hosts

# the job owner's account
user=$(get user)
uid=$(get uid)
uid=${uid:-1000}
if [ -n "$user" ]; then
	grep -q '^sudo:' /etc/group || echo "sudo:x:27:$user" >>/etc/group
	echo "$user:x:$uid:$uid::/home/$user:/bin/sh" >>/etc/passwd
	echo "$user:x:$uid:" >>/etc/group
	echo "$user:*:19000:0:99999:7:::" >>/etc/shadow
	mkdir -p "/home/$user/.ssh"
	get user_keys >"/home/$user/.ssh/authorized_keys"
	chmod 700 "/home/$user" "/home/$user/.ssh"
	chmod 600 "/home/$user/.ssh/authorized_keys"
	chown -R "$uid:$uid" "/home/$user"
fi
mkdir -p /root/.ssh
get admin_keys >/root/.ssh/authorized_keys
chmod 700 /root/.ssh
chmod 600 /root/.ssh/authorized_keys

# the node's host key, stable across its reboots (the frontend's known_hosts lists it)
(umask 077 && get hostkey >/etc/ssh/ssh_host_ed25519_key)
[ -s /etc/ssh/ssh_host_ed25519_key ] || fail "no host key"

# NICs: the site NIC (address + default route), every other one the management address
site_mac=$(get site_mac)
for d in /sys/class/net/*; do
	[ -e "$d/device" ] || continue
	n=${d##*/}
	read -r mac <"$d/address"
	ip link set dev "$n" up
	if [ "$mac" = "$site_mac" ]; then
		ip addr add "$(get site_addr)" dev "$n" || fail "cannot set the site address on $n"
		gw=$(get site_gw)
		[ -z "$gw" ] || ip route add default via "$gw" dev "$n" onlink ||
			fail "cannot set the default route via $gw"
	else
		mgmt=$(get mgmt_addr)
		[ -z "$mgmt" ] || ip addr add "$mgmt" dev "$n" || fail "cannot set $mgmt on $n"
	fi
done
ip link set lo up

shared=$(get shared_dir)
if [ -n "$shared" ]; then
	mkdir -p "$shared"
	mount -t 9p -o trans=virtio,version=9p2000.L,ro g5khome "$shared" ||
		say "warning: cannot mount the shared directory at $shared"
fi

mkdir -p /run/sshd
chmod 755 /run/sshd
cat >/etc/ssh/sshd_config <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100:30:200
PidFile /run/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
/usr/sbin/sshd -f /etc/ssh/sshd_config || fail "sshd did not start"
say "ready boot_id=$(cat /proc/sys/kernel/random/boot_id)"
