/**
 * What a VM host disk is made of, for its key: the debootstrap spec, its size, and the files and
 * units bake writes into it (host/vm-disk.ts makes the disk from these).
 */
import type { VmSpec } from "../config/model.js";
import { digestOf } from "./keys.js";

/**
 * What bake writes into a host's root file system so that it boots as a VM: the root disk in
 * fstab, DHCP on the virtual NIC (systemd-networkd) with QEMU's user-network resolver, SSH host
 * keys made at first boot (never shared by every disk of one spec), and a machine id of its own.
 */
export const VM_ROOTFS_FILES: Record<string, string> = {
  "etc/fstab": "# bake: the VM's root disk\n/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
  "etc/systemd/network/80-bake-vm.network":
    "# bake: DHCP on the VM's network interface\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
  "etc/resolv.conf": "# bake: QEMU's user network answers DNS here\nnameserver 10.0.2.3\n",
  "etc/systemd/system/ssh.service.d/bake-host-keys.conf":
    "# bake: every VM makes its own host keys at first boot, before sshd checks its configuration\n[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n",
  "etc/machine-id": "",
};

/** Units enabled by link, as `systemctl enable` would (target folder → unit). */
export const VM_ENABLED_UNITS: [string, string][] = [
  ["multi-user.target.wants", "systemd-networkd.service"],
  ["sockets.target.wants", "systemd-networkd.socket"],
  ["network-online.target.wants", "systemd-networkd-wait-online.service"],
  ["multi-user.target.wants", "ssh.service"],
];

/** The digest of a host disk: its spec, its size and what bake writes into it. */
export function vmDiskDigest(vm: VmSpec): string {
  return digestOf({
    debootstrap: vm.rootfs.debootstrap,
    diskSize: vm.diskSize,
    files: VM_ROOTFS_FILES,
    units: VM_ENABLED_UNITS,
  });
}
