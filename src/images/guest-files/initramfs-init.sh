#!/bin/busybox sh
# kiln initramfs: load the virtio modules, mount the root disk, switch_root to /sbin/kiln-init.
# With `kiln.probe=1` on the kernel command line it only proves it booted (accelerator probe).
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $(cat /modules.order); do
  insmod "/modules/$m.ko" || echo "kiln-initramfs: insmod $m failed"
done
case " $(cat /proc/cmdline) " in
  *" kiln.probe=1 "*) echo KILN-PROBE-OK; reboot -f ;;
esac
# discard: a deleted file's blocks are unmapped in the VM's qcow2 overlay (QEMU's discard=unmap)
# at once, so the host gets the disk space back.
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if ! mount -t ext4 -o rw,discard /dev/vda /newroot; then
  echo "kiln-initramfs: cannot mount the root disk /dev/vda"
  reboot -f
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/kiln-init
