#!/bin/sh
# PID 1 of a kiln guest: mounts, static user-mode networking, then the guest agent under
# catatonit (which reaps orphans, and sleeps until a signal comes: tini woke an idle guest every
# second). If the agent dies, catatonit exits, the kernel panics and QEMU (-no-reboot, panic=-1)
# exits: the host sees a dead VM instead of a silent one.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
hostname kiln
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "kiln-init: network up, starting the guest agent"
export HOME=/root KILN_AGENT_MAIN=1
# The agent's Node runs --jitless (V8's interpreter only): under TCG every piece of machine code
# V8 writes must be translated again and the JIT tiers kept recompiling, about 200 ms of the one
# vCPU per request; without them a command, a PTY or a file transfer costs a third of that or less
# (docs/ARCHITECTURE.md, "The agent's Node"). Its one hot loop, base64 for the SDK's JSON, runs
# on Buffer's native codec (src/guest/base64.ts).
# The same flags in kiln-init.sh and kiln-init-oci.sh (src/images/agent-bundle.test.ts checks).
exec /usr/bin/catatonit -- /opt/kiln/bin/node --jitless /opt/kiln/agent.mjs
