/**
 * The local host's engine. No Docker engine can run in an unprivileged container, so a local host
 * (the Packer build container and the boot test's host) reaches the outer engine through its
 * socket, mounted at the path the host's own engine would use, and these systemd drop-ins stand
 * in for the engine's units: docker.service succeeds when the socket answers (so units that
 * require it, the loader's and the services', start in their order, and a role's "restart docker"
 * handler works), docker.socket and containerd.service are skipped. A VM host runs its own.
 */
export const ENGINE_SOCKET_IN_HOST = "/run/docker.sock";

/** Drop-in files by path under a systemd unit folder (/run/systemd/system or /etc/systemd/system). */
export const ENGINE_STANDIN: Record<string, string> = {
  "docker.service.d/bake-standin.conf": [
    "# bake: a stand-in for the engine of a local host; the outer engine answers on its socket.",
    "[Unit]",
    "Description=Docker engine (bake stand-in: the outer engine through /run/docker.sock)",
    "[Service]",
    "Type=oneshot",
    "RemainAfterExit=yes",
    "Restart=no",
    "ExecStartPre=",
    "ExecStart=",
    `ExecStart=/bin/sh -c 'test -S ${ENGINE_SOCKET_IN_HOST}'`,
    "ExecReload=",
    "ExecReload=/bin/true",
    "",
  ].join("\n"),
  "docker.socket.d/bake-standin.conf":
    "# bake: the outer engine's socket is mounted instead.\n[Unit]\nConditionPathExists=/nonexistent/bake-standin\n",
  "containerd.service.d/bake-standin.conf":
    "# bake: the outer engine runs its own containerd.\n[Unit]\nConditionPathExists=/nonexistent/bake-standin\n",
};

/** The unit folders the drop-ins go in (docker.service.d, …). */
export const STANDIN_UNITS = [...new Set(Object.keys(ENGINE_STANDIN).map((p) => p.split("/")[0]))];

/** `docker run` flags that make a container a systemd host (systemd as PID 1, unprivileged). */
export const SYSTEMD_RUN_FLAGS = [
  "--tmpfs",
  "/run",
  "--tmpfs",
  "/run/lock",
  "-v",
  "/sys/fs/cgroup:/sys/fs/cgroup:ro",
  "-e",
  "container=docker",
];
