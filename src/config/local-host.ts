/**
 * The local target's default host. An AMI without `local:` boots, on `--target local`, from an
 * image bake builds itself: Debian 12 (bookworm), the distribution of Debian's own AMIs that a
 * `source:` such as `debian-12-amd64-*` names, as a debootstrap minbase with systemd as PID 1
 * (systemd-sysv, dbus), python3 for Ansible and ca-certificates. It joins the graph on the local
 * target only (other targets never build it), as an image of the project like any other base.
 */
import type { AmiNode, BakeConfig, ImageNode } from "./model.js";

export const DEFAULT_LOCAL_HOST = "bake-local-host";
export const DEFAULT_LOCAL_HOST_ROOTFS = {
  suite: "bookworm",
  variant: "minbase",
  include: ["ca-certificates", "dbus", "python3", "systemd-sysv"],
};

/** The config as the local target sees it: every AMI without `local:` starts from the default host. */
export function withDefaultLocalHost(config: BakeConfig, target: string): BakeConfig {
  const wanting = config.amis.filter((a) => !a.local);
  if (target !== "local" || !wanting.length) return config;
  // A project that defines an image of this name has chosen its own default host.
  const defined = config.images.some((i) => i.name === DEFAULT_LOCAL_HOST);
  const host: ImageNode = {
    name: DEFAULT_LOCAL_HOST,
    layer: "base",
    rootfs: { debootstrap: { ...DEFAULT_LOCAL_HOST_ROOTFS, include: [...DEFAULT_LOCAL_HOST_ROOTFS.include] } },
    args: {},
    position: wanting[0].position,
  };
  const withHost = (a: AmiNode): AmiNode =>
    a.local ? a : { ...a, local: { image: DEFAULT_LOCAL_HOST, position: a.position } };
  return { ...config, images: defined ? config.images : [...config.images, host], amis: config.amis.map(withHost) };
}
