#!/bin/sh
# PID 1 of the `cargo xtask vm` guest (busybox ash). Mounts the kernel filesystems, loads the
# modules listed in /etc/vm-modules, runs /payload.sh with stdout and stderr on the second serial
# port (the host's result file), writes the end marker with the exit code there, powers off.
# Console messages stay on the first serial port for diagnosis.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /root /run/netns
# The kernel loads IPVS schedulers on demand through this path (default /sbin/modprobe).
echo /bin/modprobe > /proc/sys/kernel/modprobe
ip link set lo up
while read -r module; do
    [ -n "$module" ] && { modprobe "$module" || echo "vm: modprobe $module failed" > /dev/ttyS1; }
done < /etc/vm-modules
cd /
sh /payload.sh > /dev/ttyS1 2>&1 < /dev/null
code=$?
echo "@@LB-VM-EXIT $code@@" > /dev/ttyS1
poweroff -f
