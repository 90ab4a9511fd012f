/**
 * The engine reached over TCP with TLS, as GitLab's docker:dind service and a remote engine are:
 * a TLS listener on 127.0.0.1 in front of the engine's socket, requiring a client certificate its
 * CA signed, with certificates made here by openssl (a CA, the engine's, a client's, and more CAs
 * when asked, for wrong-CA cases).
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import path from "node:path";
import tls from "node:tls";
import { execa } from "execa";
import { tempDir } from "./bake.js";

export interface TlsEngine {
  port: number;
  /** The folder of every key and certificate (`<name>.pem`, `<name>-key.pem`). */
  certs: string;
  /** A DOCKER_CERT_PATH folder as the docker CLI reads it: ca.pem, and cert.pem with key.pem when given. */
  certPath(name: string, files: { ca: string; cert?: string }): string;
  /** DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for this engine, with the certificates of `folder`. */
  env(folder: string): Record<string, string>;
  close(): void;
}

export async function tlsEngine(otherCas: string[] = []): Promise<TlsEngine> {
  const certs = tempDir("bake-tls-");
  const openssl = (args: string[]) => execa("openssl", args, { cwd: certs });
  const newCa = (name: string) =>
    openssl([
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}.pem`,
    ]);
  /** A key with a certificate the CA signed (for `name`, with `ext` as its extensions). */
  const signed = async (ca: string, name: string, subject: string, ext: string) => {
    writeFileSync(path.join(certs, `${name}.ext`), ext);
    await openssl([
      "req",
      "-new",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${name}-key.pem`,
      "-subj",
      subject,
      "-out",
      `${name}.csr`,
    ]);
    await openssl([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}-key.pem`,
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.pem`,
    ]);
  };
  await newCa("ca");
  for (const ca of otherCas) await newCa(ca);
  await signed("ca", "server", "/CN=engine", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  await signed("ca", "client", "/CN=bake", "extendedKeyUsage=clientAuth\n");
  // The engine's side: TLS with a client certificate required, then the engine's own socket.
  const server = tls
    .createServer(
      {
        key: readFileSync(path.join(certs, "server-key.pem")),
        cert: readFileSync(path.join(certs, "server.pem")),
        ca: readFileSync(path.join(certs, "ca.pem")),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (client) => {
        const engine = connect("/var/run/docker.sock");
        client.pipe(engine).pipe(client);
        for (const s of [client, engine]) s.on("error", () => client.destroy());
      },
    )
    .on("tlsClientError", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    certs,
    certPath(name, files) {
      const folder = path.join(certs, name);
      mkdirSync(folder);
      copyFileSync(path.join(certs, `${files.ca}.pem`), path.join(folder, "ca.pem"));
      if (files.cert) {
        copyFileSync(path.join(certs, `${files.cert}.pem`), path.join(folder, "cert.pem"));
        copyFileSync(path.join(certs, `${files.cert}-key.pem`), path.join(folder, "key.pem"));
      }
      return folder;
    },
    env: (folder) => ({ DOCKER_HOST: `tcp://127.0.0.1:${port}`, DOCKER_TLS_VERIFY: "1", DOCKER_CERT_PATH: folder }),
    close: () => server.close(),
  };
}
