#!/opt/kiln/bin/busybox sh
# PID 1 of a kiln guest made from an OCI image. Like kiln-init.sh, but it relies on nothing the
# image may lack: busybox, catatonit and Node (with its own C library) come from /opt/kiln.
B=/opt/kiln/bin/busybox
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
$B mkdir -p /proc /sys /dev /run /tmp
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
[ -c /dev/null ] || $B mount -t devtmpfs dev /dev
$B mkdir -p /dev/pts /dev/shm
$B mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$B mount -t tmpfs -o mode=1777 tmpfs /dev/shm
$B mount -t tmpfs -o mode=755 tmpfs /run
$B hostname kiln
$B ip link set lo up
$B ip link set eth0 up
$B ip addr add 10.0.2.15/24 dev eth0
$B ip route add default via 10.0.2.2
echo "kiln-init: network up, starting the guest agent"
export HOME=/root KILN_AGENT_MAIN=1
# The agent's Node flags: see kiln-init.sh.
exec /opt/kiln/bin/catatonit -- /opt/kiln/lib/ld-linux-x86-64.so.2 --library-path /opt/kiln/lib \
  /opt/kiln/bin/node --jitless /opt/kiln/agent.mjs
