/** The engine over ssh: ssh's arguments as the docker CLI builds them, and what ssh's failures mean. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { describeSshFailure, dialStdioArgs } from "../../src/tools/docker-ssh.js";
import { UsageError } from "../../src/errors.js";

test("ssh://user@host:port → ssh with the user, the port and `docker system dial-stdio`, never prompting", () => {
  assert.equal(dialStdioArgs("ssh://builder@127.0.0.1:2222"), [
    "-o",
    "ConnectTimeout=30",
    "-o",
    "BatchMode=yes",
    "-T",
    "-l",
    "builder",
    "-p",
    "2222",
    "--",
    "127.0.0.1",
    "docker",
    "system",
    "dial-stdio",
  ]);
  // No user, no port: ssh's own configuration decides them (~/.ssh/config, the login name, 22).
  assert.equal(dialStdioArgs("ssh://engine.example")!.slice(5), [
    "--",
    "engine.example",
    "docker",
    "system",
    "dial-stdio",
  ]);
  assert.equal(dialStdioArgs("ssh://[::1]:22")!.slice(5), ["-p", "22", "--", "::1", "docker", "system", "dial-stdio"]);
  // A host that looks like an option is still the host: it comes after `--`.
  assert.equal(dialStdioArgs("ssh://u@-oProxyCommand=x")!.slice(-5, -3), ["--", "-oProxyCommand=x"]);
});

test("an ssh:// address with a path, or none at all: a configuration error", () => {
  assert.throws(
    () => dialStdioArgs("ssh://u@h/var/run/docker.sock"),
    (e: Error) => e instanceof UsageError && /takes no path/.test(e.message),
  );
  assert.throws(
    () => dialStdioArgs("ssh://"),
    (e: Error) => e instanceof UsageError && /not a valid ssh:\/\/ address/.test(e.message),
  );
});

test("what ssh printed last, as one line with its fix", () => {
  assert.is(
    describeSshFailure(
      "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\nbuilder@127.0.0.1: Permission denied (publickey).",
    ),
    "the ssh server refused bake's key: add the public key to the user's authorized_keys there, or load the key into ssh-agent (ssh: builder@127.0.0.1: Permission denied (publickey).)",
  );
  assert.match(
    describeSshFailure("ssh: connect to host 127.0.0.1 port 1: Connection refused"),
    /^ssh could not connect: check the host and port in DOCKER_HOST/,
  );
  assert.match(
    describeSshFailure("Host key verification failed."),
    /^the engine host's key is not the one known_hosts holds/,
  );
  assert.match(describeSshFailure("bash: line 1: docker: command not found"), /^the remote user cannot run docker/);
  assert.match(
    describeSshFailure(
      "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
    ),
    /^docker on the engine's host cannot reach its engine/,
  );
  assert.is(describeSshFailure("something else\n"), "ssh ended: something else");
  assert.is(describeSshFailure(""), "ssh ended: ssh ended without a word");
});

test.run();
